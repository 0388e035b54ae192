//! Help for the people and bots answering customers, beside the answer
//! recommendation itself: [`sentiment`] (tone and escalation of a message)
//! and its measurement on a labelled set ([`sentiment_eval`]).

mod lexicon;
pub mod sentiment;
pub mod sentiment_eval;
