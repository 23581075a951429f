//! Looking at a line eight bytes at a time ("SIMD within a register"): the two questions the
//! `/post` pass-through asks of every byte, answered with a few integer operations per eight
//! bytes instead of a comparison and a branch per byte.
//!
//! - [`plain`]: is every byte printable ASCII, and none a backslash or a double quote?
//! - [`Specials`]: where are the commas, spaces and equals signs, in order?

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `x` equal to `b`, and no other bit. Exact: no carry crosses
/// from one byte into the next, since `(y & 0x7f) + 0x7f` is at most `0xfe`.
fn equal_bytes(x: u64, b: u8) -> u64 {
    let y = x ^ (ONES * u64::from(b));
    !(((y & !HIGHS).wrapping_add(!HIGHS)) | y) & HIGHS
}

/// Whether any byte of `x` is below `0x20`, above `0x7e`, a backslash or a double quote.
fn any_unplain(x: u64) -> bool {
    // Below 0x20: `x - 0x20` borrows into the high bit of a byte below 0x20 whose own high bit
    // was clear (the classic "has less than"; exact as an any-test). At or above 0x7f: the high
    // bit after adding 1, or already set.
    let below = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
    let above = (x.wrapping_add(ONES) | x) & HIGHS;
    (below | above | equal_bytes(x, b'\\') | equal_bytes(x, b'"')) != 0
}

/// Whether every byte of `line` is printable ASCII (`0x20..=0x7e`) other than `\` and `"`.
pub fn plain(line: &[u8]) -> bool {
    let mut chunks = line.chunks_exact(8);
    for chunk in &mut chunks {
        if any_unplain(load(chunk)) {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| (b' '..=b'~').contains(&b) && b != b'\\' && b != b'"')
}

fn load(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(chunk);
    u64::from_le_bytes(bytes)
}

/// The positions of the commas, spaces and equals signs of a line, in order.
pub struct Specials<'a> {
    line: &'a [u8],
    /// Where the word in `mask` starts.
    base: usize,
    /// High bits of the specials of that word not yet handed out.
    mask: u64,
}

impl<'a> Specials<'a> {
    /// The specials of `line`.
    pub fn new(line: &'a [u8]) -> Specials<'a> {
        Specials {
            line,
            base: 0,
            mask: Self::word(line, 0),
        }
    }

    /// The specials of the eight bytes at `base` (fewer at the end: the rest count as none).
    fn word(line: &[u8], base: usize) -> u64 {
        let x = match line.get(base..base + 8) {
            Some(chunk) => load(chunk),
            None => {
                let mut bytes = [0u8; 8];
                for (to, from) in bytes.iter_mut().zip(line.get(base..).unwrap_or_default()) {
                    *to = *from;
                }
                u64::from_le_bytes(bytes)
            }
        };
        equal_bytes(x, b',') | equal_bytes(x, b' ') | equal_bytes(x, b'=')
    }
}

impl Iterator for Specials<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.base += 8;
            if self.base >= self.line.len() {
                return None;
            }
            self.mask = Self::word(self.line, self.base);
        }
        let at = self.base + (self.mask.trailing_zeros() / 8) as usize;
        self.mask &= self.mask - 1;
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_plain(b: u8) -> bool {
        (b' '..=b'~').contains(&b) && b != b'\\' && b != b'"'
    }

    #[test]
    fn every_byte_value_in_every_position_is_judged_as_one_byte_at_a_time_would() {
        for len in [1, 7, 8, 9, 16, 17] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut line = vec![b'a'; len];
                    line[at] = b;
                    assert_eq!(plain(&line), is_plain(b), "byte {b:#x} at {at} of {len}");
                    let want: Vec<usize> = matches!(b, b',' | b' ' | b'=')
                        .then_some(at)
                        .into_iter()
                        .collect();
                    assert_eq!(
                        Specials::new(&line).collect::<Vec<_>>(),
                        want,
                        "byte {b:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn specials_come_in_order_across_words() {
        let line = b"app.requests.7,code=201,endpoint=/api/v3 value=1498.5 1764000000";
        let want: Vec<usize> = line
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b, b',' | b' ' | b'='))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(Specials::new(line).collect::<Vec<_>>(), want);
        assert_eq!(Specials::new(b"").next(), None);
        assert_eq!(
            Specials::new(b"========,").collect::<Vec<_>>(),
            (0..9).collect::<Vec<_>>()
        );
        // Bytes next to a special (0x80 and up, 0x00) do not show as specials.
        assert_eq!(
            Specials::new(&[0x00, b',', 0xff, 0x2c ^ 0x80, b'=']).collect::<Vec<_>>(),
            [1, 4]
        );
    }
}
