//! The lexical leg: Okapi BM25 over the same texts as the vector index.
//!
//! Analysis: full-width forms folded to ASCII, lower-cased, segmented by
//! jieba (search mode, so a long Chinese word also yields its dictionary
//! sub-words), plus the character bigrams of every run of Chinese characters
//! (robust to segmentation errors and typos; kept apart from words with a
//! `#` prefix), English words Porter2-stemmed, punctuation and a short list
//! of English function words dropped. Chinese function characters are kept:
//! BM25's IDF already weighs them down, and in short questions they are
//! sometimes the only words in common.
//!
//! Scores are reported normalised to [0, 1) by the query's own ceiling (each
//! query term contributes at most `idf * (k1 + 1)`; terms the library never
//! uses count at the highest IDF), so a lexical score says what share of the
//! question's weight a text covers, comparable across queries.
//!
//! Invariants: a [`LexicalIndex`] is immutable; document `i` is point `i` of
//! the vector index it belongs to. On disk (`lexical.bin`, see
//! [`LexicalIndex::write`]) it is the term dictionary and each document's
//! (term, frequency) row; postings are derived on load by a counting sort.
//! Indexes saved before that hold the analysed tokens of each point
//! (`lexical.jsonl`, one JSON array per line, the analyzer's name first),
//! which still load.

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

use jieba_rs::Jieba;
use rust_stemmers::{Algorithm, Stemmer};

use super::binio::{Reader, Writer};

/// Names the analysis; an index saved with another analyzer is re-analysed on load.
pub const ANALYZER: &str = "jieba-search+cjk-bigrams+porter2/2";

const K1: f32 = 1.2;
const B: f32 = 0.75;

const EN_STOP: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "to",
    "of", "in", "on", "at", "for", "and", "or", "it", "its", "this", "that", "i", "me", "my",
    "you", "your", "we", "our", "can", "could", "would", "will", "should", "please", "with",
    "what", "how", "there", "if", "so", "as", "by", "from", "about", "s", "t",
];

struct Analyzer {
    jieba: Jieba,
    stemmer: Stemmer,
}

fn analyzer() -> &'static Analyzer {
    static A: OnceLock<Analyzer> = OnceLock::new();
    A.get_or_init(|| Analyzer {
        jieba: Jieba::new(),
        stemmer: Stemmer::create(Algorithm::English),
    })
}

/// Loads the segmentation dictionary now rather than on the first query.
pub fn warm_up() {
    let _ = analyzer();
}

fn fold(c: char) -> char {
    match c {
        // Full-width ASCII forms and the ideographic space.
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
    .to_lowercase()
    .next()
    .unwrap_or(c)
}

/// The terms of a text, in order, with repeats.
pub fn analyze(text: &str) -> Vec<String> {
    let a = analyzer();
    let folded: String = text.chars().map(fold).collect();
    let mut out = Vec::new();
    for token in a.jieba.cut_for_search(&folded, true) {
        let w = token.word.trim();
        if w.is_empty() || !w.chars().any(char::is_alphanumeric) {
            continue;
        }
        if w.is_ascii() {
            if EN_STOP.contains(&w) {
                continue;
            }
            out.push(a.stemmer.stem(w).into_owned());
        } else {
            out.push(w.to_string());
        }
    }
    let mut run: Vec<char> = Vec::new();
    for c in folded.chars().chain(std::iter::once(' ')) {
        if is_cjk(c) {
            run.push(c);
            continue;
        }
        for pair in run.windows(2) {
            out.push(format!("#{}{}", pair[0], pair[1]));
        }
        run.clear();
    }
    out
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}')
}

/// A query, analysed against one index.
#[derive(Debug, Clone, Default)]
pub struct LexicalQuery {
    /// (term id, query term frequency) for terms the index knows.
    terms: Vec<(u32, u32)>,
    /// The best score any text could reach (normalisation ceiling).
    ceiling: f32,
    /// The share of the ceiling from terms the index knows.
    known: f32,
}

impl LexicalQuery {
    /// How much of the question's weight the library's vocabulary covers,
    /// in [0, 1] (0 for a question with no terms): out-of-scope questions
    /// tend to use words the library never does.
    pub fn coverage(&self) -> f32 {
        if self.ceiling > 0.0 {
            self.known / self.ceiling
        } else {
            0.0
        }
    }
}

/// BM25 over the points of one index version.
///
/// Documents and postings are compressed rows: the (term, frequency) pairs
/// of document `d` are `doc[doc_off[d]..doc_off[d + 1]]`, sorted by term;
/// the (document, frequency) pairs of term `t` are
/// `post[post_off[t]..post_off[t + 1]]`, sorted by document.
#[derive(Debug, PartialEq)]
pub struct LexicalIndex {
    terms: HashMap<String, u32>,
    idf: Vec<f32>,
    post_off: Vec<usize>,
    post: Vec<(u32, u32)>,
    doc_off: Vec<usize>,
    doc: Vec<(u32, u32)>,
    /// Per document: BM25 length normaliser `k1 * (1 - b + b * len / avgdl)`.
    norm: Vec<f32>,
    max_idf: f32,
}

thread_local! {
    /// Score accumulators of this thread's searches, all zero between searches.
    static ACC: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The first bytes of `lexical.bin`.
const MAGIC: &[u8; 8] = b"KEFULEX1";

impl LexicalIndex {
    /// Analyses `texts` (document `i` is `texts[i]`).
    pub fn build<S: AsRef<str>>(texts: &[S]) -> Self {
        Self::from_tokens(texts.iter().map(|t| analyze(t.as_ref())).collect())
    }

    /// Builds the index from already-analysed documents.
    pub fn from_tokens(tokens: Vec<Vec<String>>) -> Self {
        let mut terms: HashMap<String, u32> = HashMap::new();
        let mut doc_off = Vec::with_capacity(tokens.len() + 1);
        doc_off.push(0);
        let mut doc = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        for tokens in &tokens {
            // Most tokens are already known: look up before allocating a key.
            ids.clear();
            for t in tokens {
                let id = match terms.get(t.as_str()) {
                    Some(&id) => id,
                    None => {
                        let id = terms.len() as u32;
                        terms.insert(t.clone(), id);
                        id
                    }
                };
                ids.push(id);
            }
            ids.sort_unstable();
            let start = doc.len();
            for &id in &ids {
                match doc[start..].last_mut() {
                    Some((last, f)) if *last == id => *f += 1,
                    _ => doc.push((id, 1)),
                }
            }
            doc_off.push(doc.len());
        }
        Self::from_rows(terms, doc_off, doc)
    }

    /// Derives postings, IDF and length norms from the document rows.
    fn from_rows(terms: HashMap<String, u32>, doc_off: Vec<usize>, doc: Vec<(u32, u32)>) -> Self {
        let n_docs = doc_off.len() - 1;
        // Postings by counting sort: documents are visited in order, so each
        // term's row comes out sorted by document.
        let mut post_off = vec![0usize; terms.len() + 1];
        for &(t, _) in &doc {
            post_off[t as usize + 1] += 1;
        }
        for t in 0..terms.len() {
            post_off[t + 1] += post_off[t];
        }
        let mut fill = post_off.clone();
        let mut post = vec![(0u32, 0u32); doc.len()];
        for d in 0..n_docs {
            for &(t, f) in &doc[doc_off[d]..doc_off[d + 1]] {
                post[fill[t as usize]] = (d as u32, f);
                fill[t as usize] += 1;
            }
        }
        let n = n_docs as f32;
        let idf_of = |df: f32| (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        let idf: Vec<f32> = post_off
            .windows(2)
            .map(|w| idf_of((w[1] - w[0]) as f32))
            .collect();
        let lens: Vec<f32> = doc_off
            .windows(2)
            .map(|w| doc[w[0]..w[1]].iter().map(|&(_, f)| f as f32).sum())
            .collect();
        let avgdl = (lens.iter().sum::<f32>() / n.max(1.0)).max(1.0);
        let norm = lens
            .iter()
            .map(|&l| K1 * (1.0 - B + B * l / avgdl))
            .collect();
        Self {
            terms,
            idf,
            post_off,
            post,
            doc_off,
            doc,
            norm,
            max_idf: idf_of(0.0),
        }
    }

    /// How many documents the index holds.
    pub fn len(&self) -> usize {
        self.norm.len()
    }

    pub fn is_empty(&self) -> bool {
        self.norm.is_empty()
    }

    /// Writes the index (`lexical.bin`): magic, analyzer name, the terms
    /// (their UTF-8 bytes end to end, then their lengths) in id order, then
    /// per document its number of distinct terms, then every document's
    /// (term, frequency) pairs as two arrays. Postings are derived on load.
    pub fn write(&self, w: impl Write) -> std::io::Result<()> {
        let mut names = vec![""; self.terms.len()];
        for (t, &id) in &self.terms {
            names[id as usize] = t;
        }
        let mut w = Writer(w);
        w.bytes(MAGIC)?;
        w.blob(ANALYZER.as_bytes())?;
        w.blob(names.concat().as_bytes())?;
        w.u32s(&names.iter().map(|t| t.len() as u32).collect::<Vec<_>>())?;
        let counts: Vec<u32> = self
            .doc_off
            .windows(2)
            .map(|w| (w[1] - w[0]) as u32)
            .collect();
        w.u32s(&counts)?;
        w.u32s(&self.doc.iter().map(|&(t, _)| t).collect::<Vec<_>>())?;
        w.u32s(&self.doc.iter().map(|&(_, f)| f).collect::<Vec<_>>())
    }

    /// Reads what [`LexicalIndex::write`] wrote, expecting `docs` documents.
    /// `Ok(None)` when another analyzer wrote it (the texts must be analysed
    /// anew); an error when it is damaged or inconsistent.
    pub fn read(bytes: &[u8], docs: usize) -> Result<Option<Self>, String> {
        let mut r = Reader::new(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err("not a kefu lexical file".into());
        }
        if r.blob()? != ANALYZER.as_bytes() {
            return Ok(None);
        }
        let text = std::str::from_utf8(r.blob()?).map_err(|e| e.to_string())?;
        let lens = r.u32s()?;
        let mut terms = HashMap::with_capacity(lens.len());
        let mut at = 0usize;
        for (id, &len) in lens.iter().enumerate() {
            let end = at + len as usize;
            let term = text
                .get(at..end)
                .ok_or("term lengths do not fit the terms")?;
            if terms.insert(term.to_string(), id as u32).is_some() {
                return Err(format!("term {term:?} appears twice"));
            }
            at = end;
        }
        if at != text.len() {
            return Err("term lengths do not fit the terms".into());
        }
        let counts = r.u32s()?;
        let ids = r.u32s()?;
        let freqs = r.u32s()?;
        r.finish()?;
        if counts.len() != docs {
            return Err(format!("{} documents, expected {docs}", counts.len()));
        }
        if ids.len() != freqs.len() {
            return Err("term and frequency arrays differ in length".into());
        }
        let mut doc_off = Vec::with_capacity(docs + 1);
        doc_off.push(0usize);
        for &c in &counts {
            let next = doc_off[doc_off.len() - 1] + c as usize;
            doc_off.push(next);
        }
        if doc_off[docs] != ids.len() {
            return Err("document rows do not fit the pairs".into());
        }
        for w in doc_off.windows(2) {
            let row = &ids[w[0]..w[1]];
            let sorted = row.windows(2).all(|p| p[0] < p[1]);
            if !sorted || row.last().is_some_and(|&t| t as usize >= terms.len()) {
                return Err("a document row is unsorted or names an unknown term".into());
            }
        }
        if freqs.contains(&0) {
            return Err("a zero term frequency".into());
        }
        let doc = ids.into_iter().zip(freqs).collect();
        Ok(Some(Self::from_rows(terms, doc_off, doc)))
    }

    /// How many distinct terms the documents use.
    pub fn term_count(&self) -> usize {
        self.terms.len()
    }

    /// Analyses a question against this index.
    pub fn query(&self, text: &str) -> LexicalQuery {
        // Ordered, so that sums run in the same order in every process and
        // a restarted server reports the very same scores.
        let mut tf: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
        let analysed = analyze(text);
        for t in &analysed {
            *tf.entry(t.as_str()).or_default() += 1;
        }
        let mut terms = Vec::new();
        let mut ceiling = 0.0;
        let mut known = 0.0;
        for (t, f) in tf {
            // A repeated query term counts once more, damped like BM25's tf.
            let qw = (f as f32 * (K1 + 1.0)) / (f as f32 + K1);
            match self.terms.get(t) {
                Some(&id) => {
                    ceiling += qw * self.idf[id as usize] * (K1 + 1.0);
                    known += qw * self.idf[id as usize] * (K1 + 1.0);
                    terms.push((id, f));
                }
                None => ceiling += qw * self.max_idf * (K1 + 1.0),
            }
        }
        terms.sort_unstable();
        LexicalQuery {
            terms,
            ceiling,
            known,
        }
    }

    fn term_score(&self, term: u32, qf: u32, doc: usize, tf: u32) -> f32 {
        let qw = (qf as f32 * (K1 + 1.0)) / (qf as f32 + K1);
        let tf = tf as f32;
        qw * self.idf[term as usize] * tf * (K1 + 1.0) / (tf + self.norm[doc])
    }

    /// The normalised score of one document.
    pub fn score(&self, q: &LexicalQuery, doc: usize) -> f32 {
        if q.ceiling <= 0.0 || doc >= self.len() {
            return 0.0;
        }
        let d = &self.doc[self.doc_off[doc]..self.doc_off[doc + 1]];
        let mut s = 0.0;
        for &(t, qf) in &q.terms {
            if let Ok(i) = d.binary_search_by_key(&t, |&(dt, _)| dt) {
                s += self.term_score(t, qf, doc, d[i].1);
            }
        }
        s / q.ceiling
    }

    /// The `k` best documents passing `keep`, with normalised scores, best first.
    pub fn search(
        &self,
        q: &LexicalQuery,
        k: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<(usize, f32)> {
        if q.ceiling <= 0.0 || k == 0 {
            return Vec::new();
        }
        // Scores accumulate in a per-thread array over all documents (the
        // postings of common terms are long: a hash map was most of a query's
        // time at 300k texts); only the touched entries are read and reset.
        let mut out: Vec<(usize, f32)> = ACC.with(|acc| {
            let mut acc = acc.borrow_mut();
            if acc.len() < self.len() {
                acc.resize(self.len(), 0.0);
            }
            let mut touched: Vec<u32> = Vec::new();
            for &(t, qf) in &q.terms {
                let row = self.post_off[t as usize]..self.post_off[t as usize + 1];
                for &(d, tf) in &self.post[row] {
                    let slot = &mut acc[d as usize];
                    if *slot == 0.0 {
                        touched.push(d);
                    }
                    // Every term's score is positive (IDF > 0, tf >= 1).
                    *slot += self.term_score(t, qf, d as usize, tf);
                }
            }
            touched
                .into_iter()
                .map(|d| (d as usize, std::mem::take(&mut acc[d as usize]) / q.ceiling))
                .collect()
        });
        out.retain(|&(d, _)| keep(d));
        let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if out.len() > k {
            out.select_nth_unstable_by(k - 1, by_score);
            out.truncate(k);
        }
        out.sort_by(by_score);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_chinese_and_stems_english() {
        let t = analyze("退货运费谁承担？Returning ORDERS");
        // jieba cuts 退/货运费 here; the character bigrams still hold 退货.
        assert!(t.contains(&"#退货".to_string()), "{t:?}");
        assert!(t.contains(&"运费".to_string()), "{t:?}");
        assert!(t.contains(&"承担".to_string()), "{t:?}");
        assert!(t.contains(&"return".to_string()), "{t:?}");
        assert!(t.contains(&"order".to_string()), "{t:?}");
        assert!(!t.iter().any(|w| w == "？" || w == "?"));
        // Full-width letters fold to ASCII.
        assert_eq!(analyze("ＶＩＰ"), vec!["vip".to_string()]);
    }

    #[test]
    fn ranks_by_shared_rare_terms_and_normalises() {
        let idx = LexicalIndex::build(&[
            "怎么申请退货退款",
            "发票怎么开",
            "how do I track my order",
            "会员积分怎么用",
        ]);
        let q = idx.query("退货");
        let hits = idx.search(&q, 3, &|_| true);
        assert_eq!(hits[0].0, 0);
        assert!(hits[0].1 > 0.0 && hits[0].1 < 1.0);
        let q = idx.query("tracking orders");
        assert_eq!(idx.search(&q, 3, &|_| true)[0].0, 2);
        // The filter is applied; an unknown word matches nothing.
        assert!(idx.search(&q, 3, &|d| d != 2).is_empty());
        assert!(idx.search(&idx.query("量子力学"), 3, &|_| true).is_empty());
        // A query covering a document's words fully scores higher than a partial one.
        let full = idx.score(&idx.query("发票怎么开"), 1);
        let part = idx.score(&idx.query("发票怎么开 量子力学"), 1);
        assert!(full > part && part > 0.0, "{full} {part}");
    }

    #[test]
    fn saves_and_reads_back_the_same_index() {
        let texts = [
            "退货运费谁出",
            "shipping to Canada",
            "",
            "运费 运费 shipping",
        ];
        let a = LexicalIndex::build(&texts);
        let mut bytes = Vec::new();
        a.write(&mut bytes).unwrap();
        let b = LexicalIndex::read(&bytes, texts.len()).unwrap().unwrap();
        assert_eq!(a, b);
        let q = a.query("运费 shipping");
        assert_eq!(
            a.search(&q, 4, &|_| true),
            b.search(&b.query("运费 shipping"), 4, &|_| true)
        );
        // The tokens' route (indexes saved as lexical.jsonl) gives the same.
        let c = LexicalIndex::from_tokens(texts.iter().map(|t| analyze(t)).collect());
        assert_eq!(a, c);
        // Another analyzer's file asks for re-analysis.
        let other = {
            let mut w = Writer(Vec::new());
            w.bytes(MAGIC).unwrap();
            w.blob(b"another/1").unwrap();
            w.0
        };
        assert_eq!(LexicalIndex::read(&other, texts.len()), Ok(None));
        // The wrong document count, any truncation or a bad term id is an error.
        assert!(LexicalIndex::read(&bytes, 3).is_err());
        for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(LexicalIndex::read(&bytes[..cut], texts.len()).is_err());
        }
        let mut bad = bytes.clone();
        let n = bad.len();
        // The last frequency array's last entry set to zero.
        bad[n - 4..].copy_from_slice(&0u32.to_le_bytes());
        assert!(LexicalIndex::read(&bad, texts.len()).is_err());
    }
}
