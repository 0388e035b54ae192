//! The built-in demo answer library: a fictional shop's customer-service
//! FAQ (Chinese and English, every category, promotions with validity
//! dates, answers due for review, drafts and archived entries), used by the
//! README's run command (`kefu import --demo`) and by the tests.

/// The demo library as JSON Lines, in the import format.
pub const ANSWERS: &str = include_str!("answers.jsonl");
