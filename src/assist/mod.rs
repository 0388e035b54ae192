//! Help for the people and bots answering customers, beside the answer
//! recommendation itself: [`sentiment`] (tone and escalation of a message).

mod lexicon;
pub mod sentiment;
