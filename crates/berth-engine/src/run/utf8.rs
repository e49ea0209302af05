//! Decoding an agent's output chunk by chunk: a character split across two chunks (two polls,
//! two SSH packets) must come out whole, not as two replacement characters.

/// A byte stream decoded as UTF-8 piece by piece; an incomplete character at the end of a piece
/// waits for the next one. Invalid bytes become U+FFFD, as with `String::from_utf8_lossy`.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text of what was held plus `bytes`, holding back an incomplete character at the end.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut out = String::with_capacity(buf.len());
        let mut rest = &buf[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // The prefix was just validated.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        // Cut short by the end of the piece: wait for the rest.
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                    }
                }
            }
        }
        out
    }

    /// Bytes held back (at most 3): not yet part of any text returned.
    pub(crate) fn held_back(&self) -> usize {
        self.pending.len()
    }

    /// The stream ended: what is held comes out, replaced if incomplete.
    pub(crate) fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_anywhere_comes_out_whole() {
        let text = "é ü 日本 🚀 end\n";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut s = Utf8Stream::default();
            let mut out = s.push(&bytes[..cut]);
            assert!(s.held_back() <= 3);
            out.push_str(&s.push(&bytes[cut..]));
            out.push_str(&s.finish());
            assert_eq!(out, text, "cut at {cut}");
        }
        // One byte at a time.
        let mut s = Utf8Stream::default();
        let out: String = bytes.iter().map(|b| s.push(&[*b])).collect();
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_are_replaced_as_lossy_decoding_does() {
        let bytes = b"a\xffb\xc3(c\xe6\x97";
        let mut s = Utf8Stream::default();
        let mut out = s.push(bytes);
        assert_eq!(s.held_back(), 2, "an incomplete character at the end waits");
        out.push_str(&s.finish());
        assert_eq!(out, String::from_utf8_lossy(bytes));
    }
}
