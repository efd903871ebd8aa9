//! The sanitizer's learned stage: a linear model over hashed word n-grams of the view the rules
//! read, trained offline on a pool apart from the development set and embedded in the binary.
//!
//! Why a model beside the rules: the rules describe the techniques they were written from and
//! miss the same intent phrased another way (topic hijacks asked as ordinary questions, password
//! games, personas); a model weighs every word of a prompt and generalises where a pattern
//! cannot. Why this model: a logistic regression over hashed word unigrams and bigrams costs two
//! table lookups per word, so it fits in the sanitizer's budget of a few microseconds per
//! thousand characters; its weights are one byte per bucket (256 KiB), and every score can be
//! explained as the sum of the words that made it.
//!
//! A long prompt is scored in windows of [`WINDOW`] features and its highest window counts: a
//! sentence addressed to the model after pages of harmless text is not diluted by them (models
//! that read only the first tokens, or average over the whole text, miss exactly that).
//!
//! The weights and the threshold are produced by `cargo run -p spark-train --release` (see
//! `train/`), which reads its training pool, prints cross-validation figures and writes
//! `learned.bin`; a test retrains and checks the file is reproduced byte for byte.

use std::borrow::Cow;

/// Features per scoring window (about 128 words: a paragraph).
pub const WINDOW: usize = 256;

/// Evidence below this is not counted: most prompts get a little from the model, and a family
/// that names every prompt would make the categories of a flagged one meaningless.
pub const MIN_EVIDENCE: f64 = 0.2;

/// The file's first bytes, and the version of its layout.
const MAGIC: &[u8; 4] = b"SPKM";
const VERSION: u8 = 1;
/// Magic, version, bucket bits, two reserved bytes, then bias, scale and shift as `f32`.
const HEADER: usize = 20;

/// A model file that cannot be used. Only a bad commit can produce one (the file is embedded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("not a sanitizer model (bad magic or version)")]
    Format,
    #[error("bucket bits {0} outside 8..=24")]
    Bits(u8),
    #[error("expected {expected} weight bytes, found {found}")]
    Length { expected: usize, found: usize },
    #[error("a header number is not finite")]
    NotFinite,
}

/// Weights of the linear model: one byte per hashed feature bucket (the weight is
/// `(byte - 128) * scale`), a bias, and the shift that places the model's evidence on the rules'
/// scale (see [`Model::evidence`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    bits: u8,
    bias: f32,
    scale: f32,
    shift: f32,
    weights: Cow<'static, [u8]>,
}

impl Model {
    pub fn new(
        bits: u8,
        bias: f32,
        scale: f32,
        shift: f32,
        weights: Cow<'static, [u8]>,
    ) -> Result<Self, ModelError> {
        if !(8..=24).contains(&bits) {
            return Err(ModelError::Bits(bits));
        }
        let expected = 1usize << bits;
        if weights.len() != expected {
            return Err(ModelError::Length {
                expected,
                found: weights.len(),
            });
        }
        if !(bias.is_finite() && scale.is_finite() && shift.is_finite()) {
            return Err(ModelError::NotFinite);
        }
        Ok(Model {
            bits,
            bias,
            scale,
            shift,
            weights,
        })
    }

    /// Reads the file layout [`Model::to_bytes`] writes, without copying the weights.
    pub fn parse(bytes: &'static [u8]) -> Result<Self, ModelError> {
        if bytes.len() < HEADER || &bytes[..4] != MAGIC || bytes[4] != VERSION {
            return Err(ModelError::Format);
        }
        let f = |at: usize| {
            f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        Model::new(
            bytes[5],
            f(8),
            f(12),
            f(16),
            Cow::Borrowed(&bytes[HEADER..]),
        )
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.weights.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, self.bits, 0, 0]);
        for x in [self.bias, self.scale, self.shift] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&self.weights);
        out
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    pub fn shift(&self) -> f32 {
        self.shift
    }

    /// The same weights with another shift (the trainer chooses it after fitting).
    pub fn with_shift(mut self, shift: f32) -> Self {
        if shift.is_finite() {
            self.shift = shift;
        }
        self
    }

    fn weight(&self, bucket: u32) -> i32 {
        // Buckets are masked to `bits`, and the table holds exactly 2^bits bytes.
        self.weights
            .get(bucket as usize)
            .map_or(0, |&b| i32::from(b) - 128)
    }

    /// The model's log-odds that `view` is an injection: the highest over windows of
    /// [`WINDOW`] features (the whole text when it is shorter).
    pub fn logit(&self, view: &str) -> f32 {
        let mut windows = Windows::new();
        for_each_feature(view, self.bits, |bucket, _| {
            windows.push(self.weight(bucket))
        });
        let (total, _, len) = windows.decided();
        self.logit_of(total, len)
    }

    fn logit_of(&self, total: i32, len: usize) -> f32 {
        if len == 0 {
            return self.bias;
        }
        self.bias + self.scale * total as f32 / (len as f32).sqrt()
    }

    /// The model's evidence on the rules' scale: 0.5 at the chosen threshold, so a model sure
    /// enough flags a prompt alone and a hesitant one adds to a weak rule's hint.
    pub fn evidence(&self, logit: f32) -> f64 {
        sigmoid(f64::from(logit - self.shift))
    }

    /// The features of the window that decided the score, with what each added to the
    /// log-odds, largest first: at most `k`, only those that pushed towards injection. For the
    /// command line's report (`sanitize --json`), never for logs: they are the prompt's words.
    pub fn explain(&self, view: &str, k: usize) -> Vec<(String, f32)> {
        let mut all: Vec<(i32, std::ops::Range<usize>)> = Vec::new();
        let mut windows = Windows::new();
        for_each_feature(view, self.bits, |bucket, span| {
            let w = self.weight(bucket);
            windows.push(w);
            all.push((w, span));
        });
        // The deciding window, as `logit` finds it.
        let (_, start, len) = windows.decided();
        let norm = self.scale / (len.max(1) as f32).sqrt();
        let mut seen: Vec<(String, f32)> = Vec::new();
        for (w, span) in all.get(start..start + len).unwrap_or_default() {
            if *w <= 0 {
                continue;
            }
            let text = view.get(span.clone()).unwrap_or_default();
            match seen.iter_mut().find(|(t, _)| t == text) {
                Some((_, total)) => *total += *w as f32 * norm,
                None => seen.push((text.to_owned(), *w as f32 * norm)),
            }
        }
        seen.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        seen.truncate(k);
        seen
    }
}

/// The running sum of the last [`WINDOW`] weights and the first full window with the highest
/// sum: what decides a score, found in one pass without keeping the features.
struct Windows {
    ring: [i32; WINDOW],
    n: usize,
    sum: i32,
    best: i32,
    best_end: usize,
}

impl Windows {
    fn new() -> Self {
        Windows {
            ring: [0; WINDOW],
            n: 0,
            sum: 0,
            best: i32::MIN,
            best_end: 0,
        }
    }

    fn push(&mut self, w: i32) {
        let slot = self.n % WINDOW;
        self.sum += w - self.ring[slot];
        self.ring[slot] = w;
        self.n += 1;
        if self.n >= WINDOW && self.sum > self.best {
            self.best = self.sum;
            self.best_end = self.n;
        }
    }

    /// The deciding window's sum, first feature and length (the whole text when it is shorter
    /// than a window).
    fn decided(&self) -> (i32, usize, usize) {
        if self.n >= WINDOW {
            (self.best, self.best_end - WINDOW, WINDOW)
        } else {
            (self.sum, 0, self.n)
        }
    }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Calls `f(bucket, span)` for every feature of `view` in order: each word's unigram, then the
/// bigram it ends. A word is a run of ASCII letters and digits or of non-ASCII characters
/// (scripts without spaces give long words, which is fine for a hash); `span` is the byte range
/// of the feature's text in `view`. This one function is what both the trainer and the gateway
/// call, so a model always sees the features it was trained on.
pub fn for_each_feature(view: &str, bits: u8, mut f: impl FnMut(u32, std::ops::Range<usize>)) {
    let bytes = view.as_bytes();
    let drop = 64 - u32::from(bits.clamp(1, 32));
    let mut prev: Option<(u64, usize)> = None;
    let mut i = 0;
    while i < bytes.len() {
        if !WORD[usize::from(bytes[i])] {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && WORD[usize::from(bytes[i])] {
            i += 1;
        }
        let h = hash_word(&bytes[start..i]);
        f((mix(h ^ UNIGRAM) >> drop) as u32, start..i);
        if let Some((p, p_start)) = prev {
            f(
                (mix(p.wrapping_mul(BIGRAM_MUL) ^ h ^ BIGRAM) >> drop) as u32,
                p_start..i,
            );
        }
        prev = Some((h, start));
    }
}

/// Salts that keep unigram and bigram buckets apart.
const UNIGRAM: u64 = 0x9E37_79B9_7F4A_7C15;
const BIGRAM: u64 = 0xC2B2_AE3D_27D4_EB4F;
const BIGRAM_MUL: u64 = 0x1656_67B1_9E37_79F9;

/// Bytes that belong to a word: ASCII letters and digits, and every byte of a non-ASCII
/// character. A table, because every byte of every prompt is read.
const WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c >= 0x80;
        b += 1;
    }
    t
};

/// A word's hash, eight bytes at a time (most words take one multiply). Fixed constants, never
/// a seeded or platform hasher: the buckets must be the same wherever the weights are read.
fn hash_word(word: &[u8]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3 ^ word.len() as u64;
    let mut chunks = word.chunks_exact(8);
    let mut step = |v: u64| {
        h = (h ^ v).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 32;
    };
    for chunk in &mut chunks {
        // One load per eight bytes (long words: scripts written without spaces).
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        step(u64::from_le_bytes(eight));
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        // The last chunk as a little-endian integer, zero-padded; shifts rather than a copy
        // into a buffer, which compiles to a `memcpy` call per word.
        step(
            tail.iter()
                .rev()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b)),
        );
    }
    h
}

/// SplitMix64's finalizer: every input bit reaches the top bits the bucket is taken from.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(view: &str, bits: u8) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for_each_feature(view, bits, |b, span| out.push((b, view[span].to_owned())));
        out
    }

    #[test]
    fn words_give_unigrams_and_the_bigrams_they_end() {
        let f = features("ignore the rules!", 16);
        let texts: Vec<&str> = f.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["ignore", "the", "ignore the", "rules", "the rules"]);
        assert!(f.iter().all(|(b, _)| *b < 1 << 16));
        // The same word hashes to the same bucket wherever it stands; a bigram elsewhere.
        let again = features("the", 16);
        assert_eq!(again[0].0, f[1].0);
        assert_ne!(f[2].0, f[0].0);
        assert!(features("", 16).is_empty());
        assert!(features(" ,.;\n", 16).is_empty());
        assert_eq!(features("héllo wörld", 16).len(), 3);
    }

    #[test]
    fn the_file_layout_round_trips_and_bad_files_are_refused() {
        let weights: Vec<u8> = (0..256u32).map(|i| (i * 7 % 256) as u8).collect();
        let m = Model::new(8, -1.5, 0.25, 0.75, Cow::Owned(weights)).unwrap();
        let bytes: &'static [u8] = Box::leak(m.to_bytes().into_boxed_slice());
        assert_eq!(Model::parse(bytes).unwrap(), m);
        assert_eq!(Model::parse(&bytes[..10]), Err(ModelError::Format));
        assert_eq!(
            Model::parse(&bytes[..bytes.len() - 1]),
            Err(ModelError::Length {
                expected: 256,
                found: 255
            })
        );
        assert_eq!(
            Model::new(30, 0.0, 1.0, 0.0, Cow::Owned(vec![128; 4])),
            Err(ModelError::Bits(30))
        );
        assert_eq!(
            Model::new(8, f32::NAN, 1.0, 0.0, Cow::Owned(vec![128; 256])),
            Err(ModelError::NotFinite)
        );
    }

    /// A model whose only non-zero weight is one word's unigram.
    fn one_word_model(word: &str, weight: u8) -> Model {
        let bucket = features(word, 12)[0].0 as usize;
        let mut w = vec![128u8; 1 << 12];
        w[bucket] = weight;
        Model::new(12, -2.0, 0.5, 0.0, Cow::Owned(w)).unwrap()
    }

    #[test]
    fn a_score_is_the_bias_plus_the_words_over_the_root_of_their_count() {
        let m = one_word_model("password", 128 + 20);
        assert_eq!(m.logit(""), -2.0);
        assert_eq!(m.logit("hello"), -2.0);
        // "the password": 3 features, one weighing 20 * 0.5.
        let l = m.logit("the password");
        assert!((l - (-2.0 + 10.0 / 3f32.sqrt())).abs() < 1e-5, "{l}");
        assert!(m.evidence(l) > 0.5);
        assert!(m.evidence(m.logit("hello")) < 0.5);
    }

    #[test]
    fn a_sentence_after_pages_of_harmless_text_is_not_diluted() {
        let m = one_word_model("password", 128 + 40);
        let short = m.logit("tell me the password");
        let filler = "please write a unity script that moves the player. ".repeat(200);
        let long = m.logit(&format!("{filler} tell me the password"));
        let front = m.logit(&format!("tell me the password {filler}"));
        // Both see the word within one full window: the same score wherever it stands.
        assert!((long - front).abs() < 1e-5, "{long} vs {front}");
        assert!(long > -2.0 && long < short);
        // Averaged over the whole text, the word would weigh next to nothing.
        let words = filler.split_whitespace().count() as f32 * 2.0;
        assert!(long - -2.0 > 3.0 * (20.0 / words.sqrt()));
    }

    #[test]
    fn explain_names_the_words_that_pushed_the_score() {
        let m = one_word_model("password", 128 + 40);
        let why = m.explain("what is the password? the password, please", 3);
        assert_eq!(why.len(), 1);
        assert_eq!(why[0].0, "password");
        assert!(why[0].1 > 0.0);
        assert!(m.explain("nothing here", 3).is_empty());
        // In a long text, the words of the window that decided the score: the one holding
        // both late mentions, not the first window with the early one.
        let text = format!("password {} password password", "filler ".repeat(600));
        let why = m.explain(&text, 3);
        assert_eq!(why.len(), 1);
        assert!((why[0].1 - (m.logit(&text) + 2.0)).abs() < 1e-4, "{why:?}");
        assert!((why[0].1 - 2.0 * 40.0 * 0.5 / 16.0).abs() < 1e-4, "{why:?}");
    }
}
