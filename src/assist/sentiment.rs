//! Sentiment and escalation of a customer's message, by rules over
//! weighted lexicons ([`super::lexicon`]): Chinese, English and mixed text,
//! no model, a few microseconds per message.
//!
//! How a message is read:
//! 1. **Normalise**: full-width forms to ASCII (`！` -> `!`), Chinese
//!    punctuation to ASCII, common traditional characters to simplified,
//!    lower case (capitals are remembered per word).
//! 2. **Tokenise**: one token per Chinese character, one per run of
//!    letters/digits (`don't`, `12315`, `f*ck`), one per punctuation mark or
//!    emoji; hyphens are dropped (`1-star` = `1 star`).
//! 3. **Match** the lexicon longest-first at each position (forward maximum
//!    matching), so "不好意思" is polite, not "不好", and "垃圾袋" is a
//!    product, not abuse.
//! 4. **Split into clauses** at punctuation and contrast words ("但是",
//!    "but"), and mark each clause that asks for information ("怎么",
//!    "吗", "how", "what is", a clause starting with "can"/"is"/...).
//! 5. **Score** every sentiment word: negation within a short window
//!    before it in the same clause ("不满意", "not happy", "一点也不好",
//!    "never arrived") flips a positive word and turns a negative one mildly
//!    positive ("not bad"); intensifiers before ("太", "very") and after
//!    ("差死了") multiply, diminishers ("有点", "a bit") damp; a word in
//!    capitals counts 1.5 times; words before a contrast count half, after it
//!    1.2 times; problem words in a how-to question are damped (the customer
//!    asks about the case). Repeated complaints ("第三次", "third time")
//!    and waiting ("还没", "still not") add negative weight; runs of `!!`
//!    amplify, runs of `??` and shouting in capitals add frustration.
//!    `score = tanh(sum / 2)`; the label is negative below -0.2 and positive
//!    above 0.2.
//! 6. **Escalate** when an escalation cue is *used*, not just mentioned:
//!    threats to go to regulators or platforms, bad reviews, legal, media or
//!    police, statutory compensation, chargebacks and complaints escalate
//!    unless the clause is an information question with no threat or
//!    ultimatum in the message and little other negativity ("怎么投诉？",
//!    "what is 退一赔三?"); abuse escalates unless it is a question not
//!    aimed at the company ("is this a scam?"), strong profanity always;
//!    safety words escalate when they report an incident ("起火了", "my son
//!    got a rash"), not in a hypothetical or preventive question ("会过敏吗",
//!    "is it fire-resistant?"). Strong anger, urgency with a problem
//!    ("马上" + "丢了"), a repeated complaint about a problem, and very
//!    negative messages with intensity (`!!!`, capitals, `???`) escalate too.
//!    A negated cue ("不会给差评") does not fire.
//!
//! `cues` lists what fired, for explaining a decision.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::lexicon as lx;

/// The sentiment of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Negative,
    Neutral,
    Positive,
}

impl Label {
    pub const ALL: [Label; 3] = [Label::Negative, Label::Neutral, Label::Positive];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Negative => "negative",
            Label::Neutral => "neutral",
            Label::Positive => "positive",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// Classes of escalation cues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Complaints and compensation demands ("投诉", "I want to complain").
    Complaint,
    /// Regulators and consumer bodies (12315, 消协, BBB, FTC).
    Regulator,
    /// Bad reviews (差评, 一星, 1-star).
    Review,
    /// Lawyers, courts, media, police.
    Legal,
    /// Statutory compensation (退一赔三, 假一赔十).
    Statutory,
    /// Chargebacks and payment disputes.
    Chargeback,
    /// Abuse, insults, accusations of fraud.
    Abuse,
    /// Safety incidents (fire, injury, allergy).
    Safety,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Complaint => "complaint",
            Class::Regulator => "regulator",
            Class::Review => "review",
            Class::Legal => "legal",
            Class::Statutory => "statutory",
            Class::Chargeback => "chargeback",
            Class::Abuse => "abuse",
            Class::Safety => "safety",
        }
    }
}

/// The analysis of one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sentiment {
    pub label: Label,
    /// From -1 (negative) to 1 (positive).
    pub score: f32,
    /// Angry, threatening or urgent: a person should take over.
    pub escalate: bool,
    /// What fired, for explaining the decision.
    pub cues: Vec<String>,
}

/// Below `-LABEL_THRESHOLD` negative, above it positive.
const LABEL_THRESHOLD: f32 = 0.2;
/// Negation looks back this many tokens (a Chinese character or a word).
const NEGATION_WINDOW: usize = 4;
/// Intensifiers and diminishers look back this many tokens.
const MODIFIER_WINDOW: usize = 3;
/// Other negativity above which a cue inside a how-to question is only
/// mentioned ("快递员态度不好怎么投诉" is calm; an angrier message is not).
const MENTION_LIMIT: f32 = -1.6;
/// Problem words in a how-to question count this much ("外包装破损怎么办？"
/// asks about the case).
const INQUIRY_DAMPING: f32 = 0.25;
/// Weight of an abuse word only asked about ("is this a scam?").
const SUSPICION: f32 = -0.8;
/// A repeat this strong ("第三次", "third time") counts unless the message
/// is otherwise only positive; weaker ones ("again", "第二次") need
/// something else to be wrong.
const STRONG_REPEAT: f32 = -1.0;
/// A message this negative escalates when it also shows intensity (`!!`,
/// `??`, capitals, a repeated complaint).
const INTENSE_NEGATIVE: f32 = -3.0;
/// A message this negative escalates anyway.
const VERY_NEGATIVE: f32 = -4.5;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Word,
    Problem,
    Anger,
    Expected,
    Cue(Class),
    /// A public platform: a cue only with intent or other negativity.
    Platform,
    Profanity,
    Negator,
    Intensifier,
    PostIntensifier,
    Diminisher,
    Contrast,
    Repeat,
    Waiting,
    /// A demand for money back.
    Demand,
    Urgency,
    Intent,
    Inquiry,
    SecondPerson,
    Block,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    weight: f32,
}

struct Lexicon {
    /// Token sequences joined by spaces.
    entries: HashMap<String, Entry>,
    /// Every proper prefix of an entry's key (to stop matching early).
    prefixes: HashSet<String>,
    max_tokens: usize,
    traditional: HashMap<char, char>,
    acronyms: HashSet<&'static str>,
    /// Long single English words, for typos ("disapointed", "rediculous").
    fuzzy: Vec<(String, Entry)>,
    /// Patterns given twice (the first wins); a unit test keeps this empty.
    duplicates: Vec<String>,
}

fn lexicon() -> &'static Lexicon {
    static LEX: OnceLock<Lexicon> = OnceLock::new();
    LEX.get_or_init(build)
}

fn build() -> Lexicon {
    let traditional: HashMap<char, char> = lx::TRADITIONAL.iter().copied().collect();
    let mut lex = Lexicon {
        entries: HashMap::new(),
        prefixes: HashSet::new(),
        max_tokens: 1,
        traditional,
        acronyms: lx::ACRONYMS.iter().copied().collect(),
        fuzzy: Vec::new(),
        duplicates: Vec::new(),
    };
    let weighted: [(&[(&str, f32)], Kind); 11] = [
        (lx::NEGATIVE, Kind::Word),
        (lx::POSITIVE, Kind::Word),
        (lx::PROBLEMS, Kind::Problem),
        (lx::ANGER, Kind::Anger),
        (lx::EXPECTED, Kind::Expected),
        (lx::INTENSIFIERS, Kind::Intensifier),
        (lx::POST_INTENSIFIERS, Kind::PostIntensifier),
        (lx::DIMINISHERS, Kind::Diminisher),
        (lx::REPEATS, Kind::Repeat),
        (lx::WAITING, Kind::Waiting),
        (lx::DEMANDS, Kind::Demand),
    ];
    for (list, kind) in weighted {
        for &(p, w) in list {
            add(&mut lex, p, Entry { kind, weight: w });
        }
    }
    for &(class, w, patterns) in lx::CUES {
        for p in patterns {
            add(
                &mut lex,
                p,
                Entry {
                    kind: Kind::Cue(class),
                    weight: w,
                },
            );
        }
    }
    let plain: [(&[&str], Kind, f32); 9] = [
        (lx::PROFANITY, Kind::Profanity, -2.4),
        (lx::PLATFORMS, Kind::Platform, -1.6),
        (lx::NEGATORS, Kind::Negator, 0.0),
        (lx::CONTRASTS, Kind::Contrast, 0.0),
        (lx::URGENCY, Kind::Urgency, -0.3),
        (lx::INTENT, Kind::Intent, 0.0),
        (lx::INQUIRY, Kind::Inquiry, 0.0),
        (lx::SECOND_PERSON, Kind::SecondPerson, 0.0),
        (lx::BLOCKS, Kind::Block, 0.0),
    ];
    for (list, kind, w) in plain {
        for p in list {
            add(&mut lex, p, Entry { kind, weight: w });
        }
    }
    lex.fuzzy = lex
        .entries
        .iter()
        .filter(|(k, e)| {
            k.chars().count() >= FUZZY_ENTRY_LEN
                && k.chars().all(|c| c.is_ascii_lowercase())
                && e.weight != 0.0
                && matches!(
                    e.kind,
                    Kind::Word
                        | Kind::Problem
                        | Kind::Anger
                        | Kind::Expected
                        | Kind::Cue(_)
                        | Kind::Profanity
                )
        })
        .map(|(k, e)| (k.clone(), *e))
        .collect();
    lex.fuzzy.sort_by(|a, b| a.0.cmp(&b.0));
    lex
}

/// Typo tolerance: a word of at least `FUZZY_WORD_LEN` letters that matches
/// nothing is read as a lexicon word of at least `FUZZY_ENTRY_LEN` letters
/// with the same first letter one edit away (a letter added, dropped,
/// changed, or two swapped). Shorter words are left alone: "layers" is not
/// "lawyers", "police" and "polite" are both real words.
const FUZZY_WORD_LEN: usize = 7;
const FUZZY_ENTRY_LEN: usize = 8;

/// Optimal string alignment distance of at most one.
fn within_one_edit(a: &[u8], b: &[u8]) -> bool {
    let (n, m) = (a.len(), b.len());
    if n.abs_diff(m) > 1 {
        return false;
    }
    let p = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if p == n && p == m {
        return true;
    }
    let (ra, rb) = (&a[p..], &b[p..]);
    if n == m {
        // One substitution, or one transposition of neighbours.
        ra[1..] == rb[1..]
            || (ra.len() >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..])
    } else if n > m {
        ra[1..] == *rb
    } else {
        *ra == rb[1..]
    }
}

fn fuzzy_lookup<'l>(lex: &'l Lexicon, word: &str) -> Option<&'l (String, Entry)> {
    if word.len() < FUZZY_WORD_LEN || !word.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let first = word.as_bytes()[0];
    lex.fuzzy
        .iter()
        .filter(|(k, _)| k.as_bytes()[0] == first)
        .find(|(k, _)| within_one_edit(word.as_bytes(), k.as_bytes()))
}

fn add(lex: &mut Lexicon, pattern: &str, entry: Entry) {
    let toks = tokenize(pattern, &lex.traditional, &lex.acronyms);
    if toks.is_empty() {
        return;
    }
    let key = key_of(&toks);
    if lex.entries.contains_key(&key) {
        lex.duplicates.push(pattern.to_string());
        return;
    }
    for n in 1..toks.len() {
        lex.prefixes.insert(key_of(&toks[..n]));
    }
    lex.max_tokens = lex.max_tokens.max(toks.len());
    lex.entries.insert(key, entry);
}

fn key_of(toks: &[Token]) -> String {
    let mut k = String::new();
    for (i, t) in toks.iter().enumerate() {
        if i > 0 {
            k.push(' ');
        }
        k.push_str(&t.text);
    }
    k
}

// ---------------------------------------------------------------------------
// Tokens.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokKind {
    Han,
    Word,
    Punct,
    Symbol,
}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    kind: TokKind,
    /// A word in capitals that is not a known acronym (shouting).
    caps: bool,
}

fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}' | '〇')
}

/// Full-width and Chinese punctuation to ASCII; `None` drops the character.
fn normalize_char(c: char, traditional: &HashMap<char, char>) -> Option<char> {
    let c = match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        '。' | '…' | '｡' => '.',
        '、' => ',',
        '「' | '」' | '『' | '』' | '【' | '】' | '《' | '》' | '〈' | '〉' | '“' | '”' => {
            '"'
        }
        '‘' | '’' | '`' | '´' => '\'',
        '\u{FE0F}' | '\u{FE0E}' | '\u{200D}' | '\u{200B}' | '\u{1F3FB}'..='\u{1F3FF}' => {
            return None
        }
        '—' | '–' | '-' | '_' | '·' | '・' | '/' | '\\' => ' ',
        c => c,
    };
    Some(traditional.get(&c).copied().unwrap_or(c))
}

const PUNCT: &[char] = &[
    '.', ',', ';', ':', '!', '?', '~', '(', ')', '[', ']', '{', '}', '"', '<', '>', '\n', '\r',
    '|', '^', '=', '+',
];

fn tokenize(
    text: &str,
    traditional: &HashMap<char, char>,
    acronyms: &HashSet<&'static str>,
) -> Vec<Token> {
    let chars: Vec<char> = text
        .chars()
        .filter_map(|c| normalize_char(c, traditional))
        .collect();
    let word_char = |c: char| c.is_alphanumeric() && !is_han(c);
    let mut toks = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_han(c) {
            toks.push(Token {
                text: c.to_string(),
                kind: TokKind::Han,
                caps: false,
            });
            i += 1;
        } else if word_char(c) {
            let start = i;
            while i < chars.len() {
                let d = chars[i];
                let inner = (d == '\'' || d == '*')
                    && i + 1 < chars.len()
                    && (word_char(chars[i + 1]) || chars[i + 1] == '*')
                    && i > start;
                if word_char(d) || inner {
                    i += 1;
                } else {
                    break;
                }
            }
            let orig: String = chars[start..i].iter().collect();
            let letters = orig.chars().filter(|c| c.is_alphabetic()).count();
            let caps = letters >= 3
                && orig.chars().all(|c| !c.is_lowercase())
                && !acronyms.contains(orig.as_str());
            toks.push(Token {
                text: orig.to_lowercase(),
                kind: TokKind::Word,
                caps,
            });
        } else if c.is_whitespace() && c != '\n' {
            i += 1;
        } else if PUNCT.contains(&c) || c == '\'' || c == '*' {
            toks.push(Token {
                text: c.to_string(),
                kind: TokKind::Punct,
                caps: false,
            });
            i += 1;
        } else {
            toks.push(Token {
                text: c.to_string(),
                kind: TokKind::Symbol,
                caps: false,
            });
            i += 1;
        }
    }
    toks
}

/// A clause boundary: punctuation other than quotes and apostrophes.
fn is_boundary(t: &Token) -> bool {
    t.kind == TokKind::Punct && !matches!(t.text.as_str(), "'" | "\"" | "*")
}

// ---------------------------------------------------------------------------
// Matching.

#[derive(Debug, Clone)]
struct Hit {
    start: usize,
    end: usize,
    kind: Kind,
    weight: f32,
    /// The matched text as written in the lexicon's terms.
    text: String,
}

fn display(toks: &[Token]) -> String {
    let mut s = String::new();
    for (i, t) in toks.iter().enumerate() {
        if i > 0 && t.kind == TokKind::Word && toks[i - 1].kind == TokKind::Word {
            s.push(' ');
        }
        s.push_str(&t.text);
    }
    s
}

/// Number words for elapsed time ("been two weeks").
const NUMBER_WORDS: &[&str] = &[
    "a", "an", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "several", "few", "many", "couple",
];
const TIME_UNITS: &[&str] = &["day", "days", "week", "weeks", "month", "months", "hours"];
const ELAPSED: &[&str] = &["been", "for", "waited", "waiting", "over", "after", "took"];

const COUNT_NOUNS: &[&str] = &[
    "times", "emails", "calls", "messages", "tickets", "requests", "chats", "attempts",
];

/// The value of a count ("3", "three", "三", "两", "几"); 3 for vague
/// plurals ("several", "好几").
fn count_value(t: &str) -> Option<u32> {
    if let Ok(n) = t.parse::<u32>() {
        return Some(n);
    }
    let words = [
        ("one", 1),
        ("two", 2),
        ("three", 3),
        ("four", 4),
        ("five", 5),
        ("six", 6),
        ("seven", 7),
        ("eight", 8),
        ("nine", 9),
        ("ten", 10),
        ("several", 3),
        ("multiple", 3),
        ("many", 3),
        ("一", 1),
        ("二", 2),
        ("两", 2),
        ("三", 3),
        ("四", 4),
        ("五", 5),
        ("六", 6),
        ("七", 7),
        ("八", 8),
        ("九", 9),
        ("十", 10),
        ("几", 3),
    ];
    words.iter().find(|(w, _)| *w == t).map(|&(_, n)| n)
}

/// Counted contacts: "打了五次", "三遍", "5 emails", "several times". Two is
/// a weak repeat, three or more a strong one.
fn counted_repeats(toks: &[Token], hits: &mut Vec<Hit>) {
    let taken: HashSet<usize> = hits.iter().flat_map(|h| h.start..h.end).collect();
    for i in 1..toks.len() {
        let unit = toks[i].text.as_str();
        let is_unit = matches!(unit, "次" | "遍" | "回") || COUNT_NOUNS.contains(&unit);
        if taken.contains(&i) || taken.contains(&(i - 1)) || !is_unit {
            continue;
        }
        let Some(n) = count_value(&toks[i - 1].text) else {
            continue;
        };
        if n < 2 {
            continue;
        }
        let weight = if n >= 3 { -1.2 } else { -0.6 };
        hits.push(Hit {
            start: i - 1,
            end: i + 1,
            kind: Kind::Repeat,
            weight,
            text: display(&toks[i - 1..=i]),
        });
    }
    hits.sort_by_key(|h| h.start);
}

/// Elapsed time in English ("it's been 10 days", "waited for two weeks"):
/// a waiting hit on the unit.
fn elapsed_time(toks: &[Token], hits: &mut Vec<Hit>) {
    let taken: HashSet<usize> = hits.iter().flat_map(|h| h.start..h.end).collect();
    for i in 1..toks.len() {
        if taken.contains(&i) || !TIME_UNITS.contains(&toks[i].text.as_str()) {
            continue;
        }
        let n = &toks[i - 1].text;
        let numeric = n.bytes().all(|b| b.is_ascii_digit()) || NUMBER_WORDS.contains(&n.as_str());
        let elapsed = (2..=3)
            .filter_map(|b| i.checked_sub(b))
            .any(|j| ELAPSED.contains(&toks[j].text.as_str()));
        if numeric && elapsed {
            hits.push(Hit {
                start: i,
                end: i + 1,
                kind: Kind::Waiting,
                weight: -0.6,
                text: format!("{} {}", n, toks[i].text),
            });
        }
    }
    hits.sort_by_key(|h| h.start);
}

fn match_hits(lex: &Lexicon, toks: &[Token]) -> Vec<Hit> {
    let mut hits = Vec::new();
    let mut key = String::new();
    let mut i = 0;
    while i < toks.len() {
        key.clear();
        let mut best: Option<(usize, Entry)> = None;
        for (j, tok) in toks.iter().enumerate().skip(i).take(lex.max_tokens) {
            if j > i {
                key.push(' ');
            }
            key.push_str(&tok.text);
            if let Some(e) = lex.entries.get(key.as_str()) {
                best = Some((j + 1, *e));
            }
            if !lex.prefixes.contains(key.as_str()) {
                break;
            }
        }
        match best {
            Some((end, e)) => {
                hits.push(Hit {
                    start: i,
                    end,
                    kind: e.kind,
                    weight: e.weight,
                    text: display(&toks[i..end]),
                });
                i = end;
            }
            None => {
                let t = &toks[i];
                if t.kind == TokKind::Word && t.text.ends_with("n't") {
                    hits.push(Hit {
                        start: i,
                        end: i + 1,
                        kind: Kind::Negator,
                        weight: 0.0,
                        text: t.text.clone(),
                    });
                } else if let Some((word, e)) = fuzzy_lookup(lex, &t.text) {
                    hits.push(Hit {
                        start: i,
                        end: i + 1,
                        kind: e.kind,
                        weight: e.weight,
                        text: format!("{}~{word}", t.text),
                    });
                }
                i += 1;
            }
        }
    }
    hits
}

// ---------------------------------------------------------------------------
// Clauses.

#[derive(Debug, Clone, Default)]
struct Clause {
    /// Asks for information ("怎么", "how", "what is", "吗").
    inquiry: bool,
    /// Normalised text, for marker look-ups.
    text: String,
    /// Its word tokens.
    words: Vec<String>,
}

/// Words that make an English clause a question when it starts with them.
const QUESTION_START: &[&str] = &[
    "do", "does", "did", "is", "are", "can", "could", "should", "would", "will", "may", "am",
    "was", "were", "have", "has", "any", "whats",
];

/// Third-party fraud: a scam by someone posing as the shop is not abuse of
/// the shop.
const IMPERSONATION: &[&str] = &[
    "冒充",
    "假冒客服",
    "自称",
    "冒名",
    "pretending",
    "pretended",
    "impersonat",
    "claiming to be",
    "claimed to be",
    "posing as",
];

fn contains_marker(clause: &Clause, markers: &[&str]) -> bool {
    markers.iter().any(|m| {
        if m.is_ascii() {
            let parts: Vec<&str> = m.split(' ').collect();
            clause
                .words
                .windows(parts.len())
                .any(|w| w == parts.as_slice())
        } else {
            clause.text.contains(m)
        }
    })
}

// ---------------------------------------------------------------------------
// Analysis.

/// Analyses one message.
pub fn analyze(text: &str) -> Sentiment {
    let lex = lexicon();
    let toks = tokenize(text, &lex.traditional, &lex.acronyms);
    let mut hits = match_hits(lex, &toks);
    elapsed_time(&toks, &mut hits);
    counted_repeats(&toks, &mut hits);
    Analysis::new(&toks, hits).run()
}

struct Analysis<'a> {
    toks: &'a [Token],
    hits: Vec<Hit>,
    /// The hit owning each token, if any.
    owner: Vec<Option<usize>>,
    /// The clause of each token.
    clause_of: Vec<usize>,
    clauses: Vec<Clause>,
    cues: Vec<String>,
}

impl<'a> Analysis<'a> {
    fn new(toks: &'a [Token], hits: Vec<Hit>) -> Self {
        let mut owner = vec![None; toks.len()];
        for (h, hit) in hits.iter().enumerate() {
            for o in &mut owner[hit.start..hit.end] {
                *o = Some(h);
            }
        }
        // Clauses: split after punctuation and before contrast words.
        let mut clause_of = vec![0; toks.len()];
        let mut id = 0;
        for (i, t) in toks.iter().enumerate() {
            if let Some(h) = owner[i] {
                if hits[h].kind == Kind::Contrast && hits[h].start == i && i > 0 {
                    id += 1;
                }
            }
            clause_of[i] = id;
            if is_boundary(t) {
                id += 1;
            }
        }
        let mut clauses = vec![Clause::default(); id + 1];
        for (i, t) in toks.iter().enumerate() {
            let c = &mut clauses[clause_of[i]];
            if t.kind == TokKind::Word {
                if !c.text.is_empty() {
                    c.text.push(' ');
                }
                c.words.push(t.text.clone());
            }
            c.text.push_str(&t.text);
        }
        for h in &hits {
            if h.kind == Kind::Inquiry {
                clauses[clause_of[h.start]].inquiry = true;
            }
        }
        for (i, t) in toks.iter().enumerate() {
            let first_word = t.kind == TokKind::Word
                && (i == 0 || clause_of[i - 1] != clause_of[i] || is_boundary(&toks[i - 1]));
            if first_word && QUESTION_START.contains(&t.text.as_str()) {
                clauses[clause_of[i]].inquiry = true;
            }
        }
        Self {
            toks,
            hits,
            owner,
            clause_of,
            clauses,
            cues: Vec::new(),
        }
    }

    fn kind_at(&self, tok: usize) -> Option<Kind> {
        self.owner[tok].map(|h| self.hits[h].kind)
    }

    /// Is the hit negated by a negator shortly before it, in its clause?
    /// Returns (negated, hedged: an intensifier sits between, as in "不太满意").
    fn negation(&self, hit: &Hit) -> (bool, bool) {
        let clause = self.clause_of[hit.start];
        let mut hedged = false;
        for back in 1..=NEGATION_WINDOW {
            let Some(t) = hit.start.checked_sub(back) else {
                break;
            };
            if self.clause_of[t] != clause || is_boundary(&self.toks[t]) {
                break;
            }
            if matches!(
                self.toks[t].text.as_str(),
                "就" | "才" | "却" | "都" | "但" | "and"
            ) && self.owner[t].is_none()
            {
                break;
            }
            match self.kind_at(t) {
                Some(Kind::Negator) => return (true, hedged),
                Some(Kind::Intensifier) => hedged = true,
                _ => {}
            }
        }
        (false, false)
    }

    /// Product of the intensifiers and diminishers shortly before the hit.
    fn modifiers(&self, hit: &Hit) -> f32 {
        let clause = self.clause_of[hit.start];
        let mut m = 1.0;
        let mut seen = HashSet::new();
        for back in 1..=MODIFIER_WINDOW {
            let Some(t) = hit.start.checked_sub(back) else {
                break;
            };
            if self.clause_of[t] != clause || is_boundary(&self.toks[t]) {
                break;
            }
            if let Some(h) = self.owner[t] {
                let hh = &self.hits[h];
                if matches!(hh.kind, Kind::Intensifier | Kind::Diminisher) && seen.insert(h) {
                    m *= hh.weight;
                }
            }
        }
        // After the word: "差死了", "烂透了".
        if let Some(Some(h)) = self.owner.get(hit.end) {
            let hh = &self.hits[*h];
            if hh.kind == Kind::PostIntensifier && hh.start == hit.end {
                m *= hh.weight;
            }
        }
        m.min(2.5)
    }

    fn caps(&self, hit: &Hit) -> bool {
        self.toks[hit.start..hit.end].iter().any(|t| t.caps)
    }

    fn has_kind(&self, kind: Kind) -> bool {
        self.hits.iter().any(|h| h.kind == kind)
    }

    fn run(mut self) -> Sentiment {
        let message_intent = self.has_kind(Kind::Intent);
        let second_person = self.has_kind(Kind::SecondPerson);
        let whole = Clause {
            inquiry: false,
            text: self.clauses.iter().map(|c| c.text.as_str()).collect(),
            words: self
                .clauses
                .iter()
                .flat_map(|c| c.words.iter().cloned())
                .collect(),
        };
        let third_party = IMPERSONATION.iter().any(|m| {
            if m.is_ascii() {
                whole.words.join(" ").contains(m)
            } else {
                whole.text.contains(m)
            }
        });
        let last_contrast = self
            .hits
            .iter()
            .filter(|h| h.kind == Kind::Contrast)
            .map(|h| h.start)
            .max();

        // "好" before another sentiment word is an adverb ("好慢", "好开心").
        let mut adverb_good = HashSet::new();
        for w in self.hits.windows(2) {
            if w[0].text == "好"
                && w[0].kind == Kind::Word
                && w[1].start == w[0].end
                && matches!(w[1].kind, Kind::Word | Kind::Problem | Kind::Anger)
            {
                adverb_good.insert(w[1].start);
            }
        }

        let mut raw = 0.0f32;
        // Negativity of everything but the cues and repeats.
        let mut other_neg = 0.0f32;
        let mut positive = 0.0f32;
        let mut problem = false;
        let mut repeats: Vec<(String, f32, f32)> = Vec::new(); // (text, weight, contrast factor)
        let mut pending_cues: Vec<(usize, f32)> = Vec::new(); // (hit index, contrast factor)
        let mut anger = Vec::new();
        let mut demand = false;
        let mut urgency = Vec::new();

        for idx in 0..self.hits.len() {
            let hit = self.hits[idx].clone();
            let contrast = match last_contrast {
                Some(c) if hit.start < c => 0.5,
                Some(_) => 1.2,
                None => 1.0,
            };
            let clause = &self.clauses[self.clause_of[hit.start]];
            let inquiry = clause.inquiry;
            match hit.kind {
                Kind::Word | Kind::Problem | Kind::Anger => {
                    if hit.text == "好" && adverb_good_next(&self.hits, idx) {
                        continue;
                    }
                    let (negated, hedged) = self.negation(&hit);
                    let mut m = self.modifiers(&hit);
                    if adverb_good.contains(&hit.start) {
                        m *= 1.4;
                    }
                    if self.caps(&hit) {
                        m *= 1.5;
                    }
                    let mut w = hit.weight;
                    if negated {
                        let hedge = if hedged { 0.85 } else { 1.0 };
                        w = if w > 0.0 { -0.8 * w * hedge } else { -0.4 * w };
                        m = 1.0;
                    } else {
                        w *= m;
                    }
                    if hit.kind == Kind::Problem && inquiry && !message_intent && w < 0.0 {
                        w *= INQUIRY_DAMPING;
                    }
                    let w = w * contrast;
                    if w == 0.0 {
                        continue;
                    }
                    raw += w;
                    if w > 0.0 {
                        positive += w;
                    }
                    if w < 0.0 {
                        other_neg += w;
                        if hit.kind == Kind::Problem || w <= -1.0 {
                            problem = true;
                        }
                    }
                    if hit.kind == Kind::Anger && !negated {
                        anger.push(hit.text.clone());
                    }
                    let sign = if w < 0.0 { "neg" } else { "pos" };
                    let note = if negated {
                        "(negated)".to_string()
                    } else if (m - 1.0).abs() > 1e-3 {
                        format!("(x{m:.1})")
                    } else {
                        String::new()
                    };
                    self.cues.push(format!("{sign}:{}{note}", hit.text));
                }
                Kind::Expected => {
                    let (negated, _) = self.negation(&hit);
                    if !negated {
                        continue;
                    }
                    let mut w = hit.weight * self.modifiers(&hit);
                    if inquiry && !message_intent {
                        w *= INQUIRY_DAMPING;
                    }
                    let w = w * contrast;
                    raw += w;
                    other_neg += w;
                    problem = true;
                    self.cues.push(format!("problem:not {}", hit.text));
                }
                Kind::Demand => {
                    demand = true;
                    let w = hit.weight * contrast;
                    raw += w;
                    other_neg += w;
                    self.cues.push(format!("demand:{}", hit.text));
                }
                Kind::Waiting => {
                    let w = hit.weight * contrast;
                    raw += w;
                    other_neg += w;
                    problem = true;
                    self.cues.push(format!("waiting:{}", hit.text));
                }
                Kind::Repeat => repeats.push((hit.text.clone(), hit.weight, contrast)),
                Kind::Cue(_) | Kind::Profanity | Kind::Platform => {
                    let (negated, _) = self.negation(&hit);
                    if negated && hit.kind != Kind::Profanity {
                        let class = match hit.kind {
                            Kind::Cue(c) => c.as_str(),
                            _ => "platform",
                        };
                        self.cues.push(format!("negated:{class}:{}", hit.text));
                        continue;
                    }
                    pending_cues.push((idx, contrast));
                }
                Kind::Urgency => {
                    let (negated, _) = self.negation(&hit);
                    if !negated {
                        urgency.push(hit.text.clone());
                        let w = hit.weight * contrast;
                        raw += w;
                        other_neg += w;
                    }
                }
                _ => {}
            }
        }

        // Punctuation and capitals.
        let (exclamations, longest_run, question_run) = punctuation(self.toks);
        let caps_words: Vec<&str> = self
            .toks
            .iter()
            .filter(|t| t.caps)
            .map(|t| t.text.as_str())
            .collect();
        let shouting = caps_words.len() >= 2;

        // Escalation cues: used or only mentioned?
        let mut escalate_reasons: Vec<String> = Vec::new();
        for (idx, contrast) in pending_cues {
            let hit = &self.hits[idx];
            let clause = &self.clauses[self.clause_of[hit.start]];
            let (class, name) = match hit.kind {
                Kind::Cue(c) => (Some(c), c.as_str()),
                Kind::Platform => (None, "platform"),
                _ => (None, "profanity"),
            };
            let fires = match class {
                None if hit.kind == Kind::Platform => message_intent || other_neg <= -1.0,
                None => true,
                Some(Class::Abuse) if third_party => {
                    self.cues.push(format!("third_party:abuse:{}", hit.text));
                    raw += -0.8 * contrast;
                    other_neg += -0.8 * contrast;
                    continue;
                }
                Some(Class::Abuse) => {
                    let used = !(clause.inquiry && !second_person && !message_intent);
                    if !used {
                        // "是骗子吗？" is still suspicion.
                        raw += SUSPICION * contrast;
                        other_neg += SUSPICION * contrast;
                    }
                    used
                }
                Some(Class::Safety) => {
                    if contains_marker(clause, lx::HYPOTHETICAL) || would_question(clause) {
                        self.cues.push(format!("hypothetical:safety:{}", hit.text));
                        continue;
                    }
                    let incident = contains_marker(clause, lx::INCIDENT_ZH)
                        || contains_marker(clause, lx::INCIDENT_EN);
                    !clause.inquiry || incident
                }
                Some(_) => !(clause.inquiry && !message_intent && other_neg > MENTION_LIMIT),
            };
            if fires {
                raw += hit.weight * contrast;
                escalate_reasons.push(format!("{name}:{}", hit.text));
            } else {
                self.cues.push(format!("mention:{name}:{}", hit.text));
            }
        }

        // Repeated complaints count when something else is wrong.
        let any_cue = !escalate_reasons.is_empty();
        let something_wrong =
            other_neg < 0.0 || question_run || longest_run >= 2 || shouting || any_cue;
        let mut repeat_active = false;
        let mut strong_repeat = false;
        for (text, w, contrast) in &repeats {
            let strong = *w <= STRONG_REPEAT;
            if something_wrong || (strong && positive < 1.0) {
                raw += w * contrast;
                repeat_active = true;
                strong_repeat |= strong;
                self.cues.push(format!("repeat:{text}"));
            }
        }

        if raw < 0.0 {
            if longest_run >= 2 {
                raw *= 1.4;
            } else if exclamations > 0 {
                raw *= 1.15;
            }
        } else if raw > 0.0 && exclamations > 0 {
            raw *= 1.15;
        }
        if longest_run >= 2 {
            self.cues
                .push(format!("exclamation:{}", "!".repeat(longest_run)));
        }
        if question_run {
            raw -= 0.6;
            self.cues.push("question_run".into());
        }
        if shouting && raw <= 0.0 {
            raw -= 0.6;
        }
        if shouting {
            self.cues
                .push(format!("caps:{}", caps_words.join(" ").to_uppercase()));
        }

        // Escalation.
        for a in &anger {
            escalate_reasons.push(format!("anger:{a}"));
        }
        if !urgency.is_empty() && (problem || any_cue) {
            escalate_reasons.push(format!("urgency:{}+problem", urgency[0]));
        } else if let Some(u) = urgency.first() {
            self.cues.push(format!("urgency:{u}"));
        }
        if demand && (longest_run >= 2 || shouting || !urgency.is_empty()) {
            escalate_reasons.push("demand".into());
        }
        if strong_repeat {
            escalate_reasons.push("repeated_complaint".into());
        }
        let intense = longest_run >= 2 || shouting || question_run || repeat_active;
        if raw <= INTENSE_NEGATIVE && intense {
            escalate_reasons.push("intense_negative".into());
        } else if raw <= VERY_NEGATIVE {
            escalate_reasons.push("very_negative".into());
        }
        let escalate = !escalate_reasons.is_empty();
        if escalate {
            raw = raw.min(-0.5);
        }
        let score = (raw / 2.0).tanh();
        let label = if score <= -LABEL_THRESHOLD {
            Label::Negative
        } else if score >= LABEL_THRESHOLD {
            Label::Positive
        } else {
            Label::Neutral
        };
        let mut cues: Vec<String> = escalate_reasons
            .into_iter()
            .map(|r| format!("escalate:{r}"))
            .collect();
        cues.append(&mut self.cues);
        Sentiment {
            label,
            score,
            escalate,
            cues,
        }
    }
}

/// Whether "好" at `idx` is an adverb before the next sentiment word.
fn adverb_good_next(hits: &[Hit], idx: usize) -> bool {
    hits.get(idx + 1).is_some_and(|n| {
        n.start == hits[idx].end && matches!(n.kind, Kind::Word | Kind::Problem | Kind::Anger)
    })
}

/// A "会 ... 吗" question: asks whether something would happen ("会过敏吗").
fn would_question(clause: &Clause) -> bool {
    clause
        .text
        .find('会')
        .is_some_and(|i| clause.text[i..].contains('吗') || clause.text[i..].contains('?'))
}

/// (number of '!', longest run of '!', whether a run of two or more of
/// '?' and '!' holds a '?': "???", "?!", "!?").
fn punctuation(toks: &[Token]) -> (usize, usize, bool) {
    let mut exclamations = 0;
    let mut longest = 0;
    let mut question_run = false;
    let mut i = 0;
    while i < toks.len() {
        let mark = |t: &Token| t.kind == TokKind::Punct && (t.text == "!" || t.text == "?");
        if !mark(&toks[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut bangs = 0;
        while i < toks.len() && mark(&toks[i]) {
            if toks[i].text == "!" {
                exclamations += 1;
                bangs += 1;
                longest = longest.max(bangs);
            } else {
                bangs = 0;
            }
            i += 1;
        }
        let run = &toks[start..i];
        if run.len() >= 2 && run.iter().any(|t| t.text == "?") {
            question_run = true;
        }
    }
    (exclamations, longest, question_run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Label::{Negative as Neg, Neutral as Neu, Positive as Pos};

    /// Checks every case and reports all failures at once, with the cues.
    fn check(cases: &[(&str, Label, bool)]) {
        let mut failures = Vec::new();
        for &(text, label, escalate) in cases {
            let s = analyze(text);
            if s.label != label || s.escalate != escalate {
                failures.push(format!(
                    "{text:?}: expected {} escalate={escalate}, got {} escalate={} score {:.3} cues {:?}",
                    label.as_str(),
                    s.label.as_str(),
                    s.escalate,
                    s.score,
                    s.cues
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn lexicon_has_no_duplicate_patterns() {
        assert!(
            lexicon().duplicates.is_empty(),
            "patterns listed twice: {:?}",
            lexicon().duplicates
        );
    }

    #[test]
    fn threats_to_go_to_regulators_and_platforms_escalate() {
        check(&[
            ("你们再不退款我就打12315投诉！", Neg, true),
            ("已经向消协反映了，你们等着吧", Neg, true),
            ("质量这么差，我要去市场监管局举报你们", Neg, true),
            (
                "I will report you to the BBB if I don't get a refund",
                Neg,
                true,
            ),
            ("I'll contact consumer protection and the FTC", Neg, true),
            ("不退款就12315见", Neg, true),
        ]);
    }

    #[test]
    fn bad_reviews_escalate() {
        check(&[
            ("不给我处理就给差评", Neg, true),
            (
                "Leaving a 1-star review everywhere. Worst service ever.",
                Neg,
                true,
            ),
            ("再拖下去我一定打一星", Neg, true),
            ("customer service太差了, 我要给差评", Neg, true),
        ]);
    }

    #[test]
    fn legal_media_and_police_escalate() {
        check(&[
            ("我会请律师起诉你们", Neg, true),
            ("再不解决我就找媒体曝光", Neg, true),
            ("My lawyer will be in touch.", Neg, true),
            ("Refund me immediately or I'll sue", Neg, true),
            ("報警了，你們等著", Neg, true),
        ]);
    }

    #[test]
    fn statutory_compensation_and_chargebacks_escalate() {
        check(&[
            ("卖假货，必须退一赔三！", Neg, true),
            ("假一赔十，你们自己说的，赶紧赔", Neg, true),
            ("你们这服务太垃圾了吧，退一陪三！！", Neg, true),
            ("我要申请信用卡拒付", Neg, true),
            ("I'm filing a chargeback with my bank today", Neg, true),
            ("I will dispute the charge with PayPal", Neg, true),
        ]);
    }

    #[test]
    fn abuse_and_profanity_escalate() {
        check(&[
            ("你们就是骗子，坑人", Neg, true),
            ("垃圾商家", Neg, true),
            ("tmd什么破服务", Neg, true),
            ("wtf is wrong with you people", Neg, true),
            ("You guys are thieves and liars", Neg, true),
            ("This is a scam. I want my money back NOW", Neg, true),
            ("你们是骗子吗？", Neg, true),
            ("辣鸡店铺", Neg, true),
        ]);
    }

    #[test]
    fn safety_incidents_escalate_but_safety_questions_do_not() {
        check(&[
            ("充电器充着充着起火了，差点烧到孩子", Neg, true),
            ("孩子吃了你们的饼干过敏住院了", Neg, true),
            ("电池鼓包了，还冒烟", Neg, true),
            ("The charger caught fire and burned my desk!!", Neg, true),
            ("My son got a rash after wearing the shirt", Neg, true),
            ("My daughter choked on a small part", Neg, true),
            ("这个phone充电的时候explode了", Neg, true),
            ("这款面霜孕妇用会过敏吗？", Neu, false),
            ("如果电池鼓包了怎么办", Neu, false),
            ("Is this heater fire-resistant?", Neu, false),
            ("Does this toy pose a choking hazard?", Neu, false),
            ("Do you sell a Fire TV stick?", Neu, false),
        ]);
    }

    #[test]
    fn urgency_escalates_only_with_a_problem() {
        check(&[
            ("马上给我处理！东西丢了三天没人管", Neg, true),
            ("I need this fixed ASAP, the package is missing", Neg, true),
            ("急！！订单被重复扣款了", Neg, true),
            ("Can you ship it ASAP? It's a birthday gift", Neu, false),
            ("急用，能今天发货吗", Neu, false),
            ("能不能加急发货", Neu, false),
            ("不急，慢慢来", Neu, false),
        ]);
    }

    #[test]
    fn repeated_complaints_escalate_but_repeat_customers_do_not() {
        check(&[
            ("这是我第三次问了，到底什么时候发货", Neg, true),
            ("Third time asking: where is my refund?", Neg, true),
            ("说了多少遍了，还是没人处理", Neg, true),
            ("第二次购买了，很满意", Pos, false),
            ("This is my third time ordering, love it", Pos, false),
        ]);
    }

    #[test]
    fn anger_and_intensity_escalate() {
        check(&[
            ("气死我了，说好的今天到，结果还没发货", Neg, true),
            (
                "I am absolutely furious, nobody has replied in two weeks",
                Neg,
                true,
            ),
            ("WHERE IS MY ORDER??? THIS IS UNACCEPTABLE", Neg, true),
            ("受够了你们的服务", Neg, true),
        ]);
        let plain = analyze("服务差").score;
        let strong = analyze("服务太差了").score;
        let shouted = analyze("服务太差了！！！").score;
        assert!(
            plain > strong && strong > shouted,
            "{plain} {strong} {shouted}"
        );
        let calm = analyze("This is unacceptable").score;
        let caps = analyze("This is UNACCEPTABLE").score;
        assert!(caps < calm, "{caps} {calm}");
        let mild = analyze("有点慢").score;
        let slow = analyze("慢").score;
        assert!(mild > slow && mild < 0.0, "{mild} {slow}");
    }

    #[test]
    fn complaint_words_in_how_to_questions_are_calm() {
        check(&[
            ("怎么投诉？", Neu, false),
            ("how do I file a complaint?", Neu, false),
            ("what is 退一赔三?", Neu, false),
            ("退一赔三是什么意思", Neu, false),
            ("投诉多久会有回复？", Neu, false),
            ("12315是什么电话", Neu, false),
            ("How do I dispute a charge on PayPal?", Neu, false),
            ("I want to know how to file a complaint", Neu, false),
            ("我想问一下假一赔十怎么算", Neu, false),
            ("Can I talk to a manager?", Neu, false),
            ("超时不发货有赔偿吗？", Neu, false),
            ("Is this website a scam?", Neg, false),
        ]);
    }

    #[test]
    fn intent_turns_a_question_into_a_threat() {
        check(&[
            ("客服态度恶劣，我要投诉", Neg, true),
            ("我要头诉你们", Neg, true),
            ("I want to complain about the courier", Neg, true),
            ("refund还没到账，我要投诉", Neg, true),
            ("我的order三周了还没到，你们是scam吧", Neg, true),
        ]);
    }

    #[test]
    fn words_inside_other_words_are_not_cues() {
        check(&[
            ("买垃圾袋送到哪里", Neu, false),
            ("滚筒洗衣机能不能上门安装", Neu, false),
            ("怎么操作退货", Neu, false),
            ("工商银行卡退款要几天", Neu, false),
            ("七天无理由退货的运费谁出", Neu, false),
            ("退差价怎么申请", Neu, false),
            ("Do you sell trash bags?", Neu, false),
            (
                "Sorry, stupid question: where do I enter the promo code?",
                Neu,
                false,
            ),
        ]);
    }

    #[test]
    fn negation_flips_within_a_short_window() {
        check(&[
            ("不满意", Neg, false),
            ("一点也不满意", Neg, false),
            ("不是很满意", Neg, false),
            ("没问题", Neu, false),
            ("not bad", Pos, false),
            ("not bad at all, thanks", Pos, false),
            ("not happy with this", Neg, false),
            ("not very good", Neg, false),
            ("My package still hasn't arrived", Neg, false),
            ("It never arrived", Neg, false),
            ("没几天就坏了", Neg, false),
            ("不会给差评的，放心", Pos, false),
            ("I won't leave a bad review, don't worry", Neu, false),
        ]);
        assert!(analyze("not bad").score < analyze("good").score);
    }

    #[test]
    fn mildly_negative_messages_do_not_escalate() {
        check(&[
            ("快递有点慢", Neg, false),
            ("收到的衣服有色差，有点失望", Neg, false),
            ("质量不太好", Neg, false),
            ("I'm a bit disappointed with the quality", Neg, false),
            ("The delivery was late", Neg, false),
            ("the item arrived damaged", Neg, false),
            ("等了好久还没发货", Neg, false),
            ("Why is my refund taking so long?", Neg, false),
            ("我的快递还没到", Neg, false),
        ]);
    }

    #[test]
    fn plain_questions_are_neutral() {
        check(&[
            ("怎么开发票", Neu, false),
            ("What is your return policy?", Neu, false),
            ("Do you ship to Canada?", Neu, false),
            ("请问怎么修改收货地址", Neu, false),
            ("退货运费谁出", Neu, false),
            ("优惠券过期了还能用吗", Neu, false),
            ("收到的快递外包装破损怎么办？", Neu, false),
            ("How long does a PayPal refund take?", Neu, false),
            ("我的order什么时候ship", Neu, false),
        ]);
    }

    #[test]
    fn politeness_and_thanks_are_positive() {
        check(&[
            ("谢谢，问题解决了", Pos, false),
            ("客服很耐心，非常满意", Pos, false),
            ("Thank you so much for your help!", Pos, false),
            ("Great service, fast delivery 👍", Pos, false),
            ("发货很快，五星好评", Pos, false),
            ("好的，谢谢您", Pos, false),
            ("辛苦了", Pos, false),
            ("Thanks! The replacement arrived today", Pos, false),
            ("您好，请问怎么开发票？谢谢", Pos, false),
            ("太好了", Pos, false),
            ("謝謝你們", Pos, false),
        ]);
    }

    #[test]
    fn contrast_weighs_what_comes_after() {
        check(&[
            ("谢谢你们，但是快递太慢了", Neg, false),
            ("The product is great but delivery was slow", Neg, false),
            ("虽然等了好久，但是东西很好，谢谢", Pos, false),
        ]);
    }

    #[test]
    fn typos_and_informal_spellings_are_read() {
        check(&[
            ("I'm very disapointed", Neg, false),
            ("this is rediculous", Neg, false),
            ("terible service", Neg, false),
            ("我要投述", Neg, true),
            ("骗纸", Neg, true),
            ("Ｉ　ｗｉｌｌ　ｓｕｅ　ｙｏｕ！", Neg, true),
            ("thx a lot", Pos, false),
        ]);
    }

    #[test]
    fn problems_waiting_and_public_threats() {
        check(&[
            ("东西不错，就是物流慢了点", Pos, false),
            ("手机用了两天就黑屏了", Neg, false),
            ("app一直crash，用不了", Neg, false),
            ("你们这是欺诈消费者！", Neg, true),
            ("我要找你们领导", Neg, true),
            ("Hi, where is my order? It's been 10 days", Neg, false),
            ("订单三天了还没发货，什么情况？", Neg, false),
            (
                "I'm going to post about this on Twitter and Reddit",
                Neg,
                true,
            ),
            (
                "I saw your ad on Instagram, is the sale still on?",
                Neu,
                false,
            ),
            ("My order is late, this is so frustrating", Neg, false),
            (
                "The battery is swollen and hot, is that dangerous?",
                Neg,
                true,
            ),
            ("急急急！！！明天就要用，今天能发吗", Neg, false),
            ("I'm so done with this company", Neg, false),
        ]);
    }

    #[test]
    fn counted_contacts_demands_and_more_problem_words() {
        check(&[
            ("我都打了五次电话了，你们还要我等多久？", Neg, true),
            ("Still no response after 5 emails. Ridiculous.", Neg, true),
            ("买了三次了，每次都很满意", Pos, false),
            ("给我退钱！！！", Neg, true),
            ("GIVE ME MY MONEY BACK", Neg, true),
            ("I want my money back", Neg, false),
            ("质量一般般吧", Neg, false),
            ("退款申请被拒绝了，理由是什么？", Neg, false),
            ("这么简单的问题都解决不了，要你们有什么用", Neg, true),
            ("搞什么啊，等了一个月就给我发个空盒子？", Neg, true),
            (
                "If I don't hear back by Friday I will contact my credit card company",
                Neg,
                true,
            ),
            ("Package says delivered but I never got it", Neg, false),
            ("这是scam吗？为什么要我转账", Neg, false),
            ("衣服洗了一次就掉色，太差劲了", Neg, false),
            ("宝宝用了这个湿巾脸上起红疹", Neg, true),
            ("上次就说修好了", Neu, false),
            ("我觉得你们的服务还可以", Pos, false),
        ]);
    }

    #[test]
    fn third_party_scams_are_not_abuse_of_the_shop() {
        check(&[
            ("我收到一个诈骗电话，有人冒充你们客服", Neg, false),
            (
                "Someone pretending to be your support team tried to scam me",
                Neg,
                false,
            ),
        ]);
    }

    #[test]
    fn cues_explain_the_decision() {
        let s = analyze("你们再不退款我就打12315投诉！");
        assert!(
            s.cues.iter().any(|c| c == "escalate:regulator:12315"),
            "{:?}",
            s.cues
        );
        let s = analyze("怎么投诉？");
        assert!(
            s.cues.iter().any(|c| c == "mention:complaint:投诉"),
            "{:?}",
            s.cues
        );
        let s = analyze("不满意");
        assert!(
            s.cues.iter().any(|c| c.starts_with("neg:不满意")),
            "{:?}",
            s.cues
        );
        let s = analyze("不会给差评的");
        assert!(
            s.cues.iter().any(|c| c == "negated:review:给差评"),
            "{:?}",
            s.cues
        );
        let s = analyze("I'm very disapointed");
        assert!(
            s.cues
                .iter()
                .any(|c| c.contains("disapointed~disappointed")),
            "{:?}",
            s.cues
        );
    }

    #[test]
    fn scores_stay_in_range_and_odd_input_is_handled() {
        let long_bad = "垃圾".repeat(500);
        let long_good = "谢谢".repeat(500);
        for text in [
            "",
            "   ",
            "!!!!!!!!!!",
            "???",
            "😡😡😡😡😡😡😡😡😡😡",
            long_bad.as_str(),
            long_good.as_str(),
            "'''***---",
            "a'b*c n't",
            "\u{FE0F}\u{200D}",
        ] {
            let s = analyze(text);
            assert!((-1.0..=1.0).contains(&s.score), "{text:?}: {}", s.score);
        }
        assert_eq!(analyze("").label, Label::Neutral);
        assert!(!analyze("").escalate);
        assert!(analyze(&long_bad).escalate);
        assert_eq!(analyze(&long_good).label, Label::Positive);
    }

    #[test]
    fn random_mixes_never_panic() {
        // Pieces that exercise every path: cues, negators, modifiers,
        // punctuation runs, apostrophes, emoji, full-width forms, numbers.
        let pieces = [
            "不",
            "没",
            "太",
            "很",
            "投诉",
            "12315",
            "差评",
            "怎么",
            "吗",
            "？",
            "！",
            "!",
            "?",
            "'",
            "*",
            "n't",
            "not",
            "very",
            "scam",
            "you",
            "fire",
            "会",
            "了",
            "第三次",
            "3",
            "times",
            "been",
            "days",
            "好",
            "慢",
            "了点",
            "但是",
            "but",
            "ＡＢＣ",
            "WHERE",
            "😡",
            "\u{FE0F}",
            " ",
            "\n",
            "还没",
            "急",
            "马上",
            "坏了",
            "冒充",
            "退一赔三",
            "disapointed",
            "a",
            "5",
            "次",
            "谢谢",
            "thanks",
            "滚",
            "-",
            "é",
            "Ω",
            "\u{3000}",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3000 {
            let mut text = String::new();
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (state >> 59) as usize + 1;
            for _ in 0..n {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(pieces[(state >> 33) as usize % pieces.len()]);
            }
            let s = analyze(&text);
            assert!((-1.0..=1.0).contains(&s.score), "{text:?}: {}", s.score);
            assert!(!s.escalate || s.label == Label::Negative, "{text:?}: {s:?}");
        }
    }

    #[test]
    fn tokens_are_normalised() {
        let lex = lexicon();
        let toks = tokenize(
            "ＷＨＥＲＥ is my 1-star f*ck 退一賠三！",
            &lex.traditional,
            &lex.acronyms,
        );
        let texts: Vec<&str> = toks.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            texts,
            ["where", "is", "my", "1", "star", "f*ck", "退", "一", "赔", "三", "!"]
        );
        assert!(toks[0].caps && !toks[1].caps);
        let toks = tokenize("BBB FTC ASAP", &lex.traditional, &lex.acronyms);
        assert!(toks.iter().all(|t| !t.caps), "acronyms are not shouting");
    }

    #[test]
    fn one_edit_distance() {
        assert!(within_one_edit(b"disapointed", b"disappointed"));
        assert!(within_one_edit(b"terible", b"terrible"));
        assert!(within_one_edit(b"recieved", b"received"));
        assert!(within_one_edit(b"complain", b"complain"));
        assert!(!within_one_edit(b"teribble", b"terrible"));
        assert!(!within_one_edit(b"layers", b"lawyers!!"));
        assert!(!within_one_edit(b"abc", b"xyz"));
    }
}
