//! Runs of ASCII bytes of one class (letters, letters and digits, printable, any ASCII), measured
//! eight bytes at a time.
//!
//! The checks that read every byte of a prompt (normalization, folding's check, the flood check,
//! the encoded-block search) spend most of their time stepping over ordinary words a byte at a
//! time. Testing a whole `u64` at once (SWAR: each byte's class lands in its high bit) makes that
//! step several times cheaper, without `unsafe` or platform intrinsics. Each function returns
//! exactly what the byte-at-a-time loop beside it in the tests returns.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
/// The ASCII case bit in every byte: set, it makes each upper-case letter its lower-case one.
const CASE: u64 = ONES * 0x20;

/// The high bit of each byte of `x` set where that byte lies in `lo..=hi` (`hi < 0x80`).
///
/// Exact for bytes below 0x80: adding at most 0x80 to one of them cannot carry into the next.
/// A byte of 0x80 or more may carry into the bytes after it; callers clear non-ASCII bytes,
/// and only the first failing byte of a word is ever read, so such a carry is never seen.
const fn in_range(x: u64, lo: u8, hi: u8) -> u64 {
    let at_least_lo = x.wrapping_add(ONES * (0x80 - lo as u64));
    let above_hi = x.wrapping_add(ONES * (0x7F - hi as u64));
    at_least_lo & !above_hi & HIGH
}

/// The length of the run at the start of `bytes` whose bytes all pass `class` (a word-wide
/// test setting the high bit of each passing byte) and `scalar` (the same test for one byte).
#[inline]
fn run(bytes: &[u8], class: impl Fn(u64) -> u64, scalar: impl Fn(u8) -> bool) -> usize {
    let mut n = 0;
    for chunk in bytes.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(word);
        let pass = class(x) & !x & HIGH;
        if pass != HIGH {
            // Little-endian: the lowest clear high bit is the first byte that failed.
            return n + ((!pass & HIGH).trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + bytes[n..].iter().take_while(|&&b| scalar(b)).count()
}

/// Leading ASCII letters (`A-Z`, `a-z`).
pub(super) fn letters(bytes: &[u8]) -> usize {
    run(
        bytes,
        |x| in_range(x | CASE, b'a', b'z'),
        |b| b.is_ascii_alphabetic(),
    )
}

/// Leading ASCII letters and digits.
pub(super) fn alphanumerics(bytes: &[u8]) -> usize {
    run(
        bytes,
        |x| in_range(x | CASE, b'a', b'z') | in_range(x, b'0', b'9'),
        |b| b.is_ascii_alphanumeric(),
    )
}

/// Leading printable ASCII other than the space (`!` to `~`).
pub(super) fn graphic(bytes: &[u8]) -> usize {
    run(bytes, |x| in_range(x, b'!', b'~'), |b| b.is_ascii_graphic())
}

/// Leading ASCII bytes.
pub(super) fn ascii(bytes: &[u8]) -> usize {
    run(bytes, |_| HIGH, |b| b.is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_bytes(bytes: &[u8], f: impl Fn(&u8) -> bool) -> usize {
        bytes.iter().take_while(|b| f(b)).count()
    }

    /// Every byte value in every one of the eight positions, after runs of every length.
    #[test]
    fn each_byte_value_ends_a_run_where_the_byte_loop_says() {
        for len in 0..20 {
            for b in 0..=255u8 {
                let mut v = vec![b'a'; len];
                v.push(b);
                v.extend_from_slice(b"Zz09~!xyz\xff");
                assert_eq!(
                    letters(&v),
                    by_bytes(&v, u8::is_ascii_alphabetic),
                    "{len} {b}"
                );
                assert_eq!(
                    alphanumerics(&v),
                    by_bytes(&v, u8::is_ascii_alphanumeric),
                    "{len} {b}"
                );
                assert_eq!(graphic(&v), by_bytes(&v, u8::is_ascii_graphic), "{len} {b}");
                assert_eq!(ascii(&v), by_bytes(&v, u8::is_ascii), "{len} {b}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        #[test]
        fn runs_are_the_byte_loops(v in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(letters(&v), by_bytes(&v, u8::is_ascii_alphabetic));
            prop_assert_eq!(alphanumerics(&v), by_bytes(&v, u8::is_ascii_alphanumeric));
            prop_assert_eq!(graphic(&v), by_bytes(&v, u8::is_ascii_graphic));
            prop_assert_eq!(ascii(&v), by_bytes(&v, u8::is_ascii));
        }

        #[test]
        fn runs_of_words_are_the_byte_loops(s in "[a-zA-Z0-9 .,!é\u{1F525}]{0,80}") {
            let v = s.as_bytes();
            prop_assert_eq!(letters(v), by_bytes(v, u8::is_ascii_alphabetic));
            prop_assert_eq!(alphanumerics(v), by_bytes(v, u8::is_ascii_alphanumeric));
            prop_assert_eq!(graphic(v), by_bytes(v, u8::is_ascii_graphic));
            prop_assert_eq!(ascii(v), by_bytes(v, u8::is_ascii));
        }
    }
}
