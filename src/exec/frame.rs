//! The end-of-output frame around a `sh -c` command: after the command the pod prints a random
//! marker and the exit code, then waits for our acknowledgement before it exits.
//!
//! Kubernetes exec can lose the tail of stdout *and* the exit status when the connection is
//! torn down while data is still in flight (kubernetes/kubernetes#124571; reproduced on the
//! test bed: a slow reader of `head -c 200000000 /dev/urandom` got 196 MB and a Success status).
//! With the frame, a lost tail is detected — the marker is missing — and never mistaken for
//! success; and because the command outlives the transfer, nothing is torn down early.

/// Bytes of the acknowledgement written to stdin once the marker has been read.
pub const ACK: &[u8] = b"\n";

/// One command's end marker (random, so no output can contain it by accident or on purpose).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    marker: String,
}

impl Frame {
    /// A frame with a marker derived from `nonce`.
    pub fn with_nonce(nonce: [u8; 16]) -> Self {
        Self {
            marker: format!("REWIND-END-{}", hex::encode(nonce)),
        }
    }

    /// A frame with a fresh random marker.
    pub fn random() -> Self {
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce[..]);
        Self::with_nonce(nonce)
    }

    /// `sh -c SCRIPT` wrapped so the marker and exit code follow its output and the shell
    /// waits for the acknowledgement; `None` for commands of another form (run unframed).
    /// Without input the script's stdin is /dev/null, as if no stdin were attached.
    pub fn wrap(&self, command: &[String], has_input: bool) -> Option<Vec<String>> {
        let [shell, flag, script] = command else {
            return None;
        };
        if shell != "sh" || flag != "-c" {
            return None;
        }
        let input = if has_input { "" } else { " </dev/null" };
        Some(vec![
            shell.clone(),
            flag.clone(),
            format!(
                "( {script}\n){input}; rewind_rc=$?; printf '%s %d\\n' '{marker}' \"$rewind_rc\"; read -r rewind_ack; exit \"$rewind_rc\"",
                marker = self.marker
            ),
        ])
    }

    /// A scanner for this frame's marker in stdout.
    pub fn scanner(&self) -> TrailerScanner {
        TrailerScanner {
            marker: self.marker.as_bytes().to_vec(),
            held: Vec::new(),
            exit_code: None,
        }
    }
}

/// Longest exit code text `$?` prints (0–255), plus slack.
const MAX_CODE_DIGITS: usize = 5;

/// Separates a framed command's output from its trailer, chunk by chunk (pure, bounded memory:
/// at most one trailer's length is held back).
#[derive(Debug)]
pub struct TrailerScanner {
    marker: Vec<u8>,
    held: Vec<u8>,
    exit_code: Option<i32>,
}

/// Something other than output arrived where only the trailer may be.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the command wrote {0} bytes after its end marker (a background process still writing?)")]
pub struct AfterTrailer(pub usize);

impl TrailerScanner {
    fn max_trailer(&self) -> usize {
        self.marker.len() + 1 + MAX_CODE_DIGITS + 1
    }

    /// The exit code from the trailer, once it has been read.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// Takes a chunk of stdout and appends to `out` the bytes that are certainly output.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), AfterTrailer> {
        if self.exit_code.is_some() {
            return if chunk.is_empty() {
                Ok(())
            } else {
                Err(AfterTrailer(chunk.len()))
            };
        }
        let total = self.held.len() + chunk.len();
        let tail_start = total.saturating_sub(self.max_trailer());
        let tail = self.range(chunk, tail_start, total);
        let cut = match self.find_trailer(&tail) {
            Some((offset, code)) => {
                self.exit_code = Some(code);
                tail_start + offset
            }
            None => total.saturating_sub(self.max_trailer() - 1),
        };
        out.extend_from_slice(&self.range(chunk, 0, cut));
        let keep = if self.exit_code.is_some() {
            Vec::new()
        } else {
            self.range(chunk, cut, total)
        };
        self.held = keep;
        Ok(())
    }

    /// Bytes `from..to` of held ++ chunk.
    fn range(&self, chunk: &[u8], from: usize, to: usize) -> Vec<u8> {
        let held = self.held.len();
        let mut bytes = Vec::with_capacity(to - from);
        if from < held {
            bytes.extend_from_slice(&self.held[from..to.min(held)]);
        }
        if to > held {
            bytes.extend_from_slice(&chunk[from.max(held) - held..to - held]);
        }
        bytes
    }

    /// Where the trailer starts in `tail` and its exit code, if `tail` ends with one.
    fn find_trailer(&self, tail: &[u8]) -> Option<(usize, i32)> {
        let body = tail.strip_suffix(b"\n")?;
        let start = body
            .windows(self.marker.len())
            .rposition(|window| window == self.marker.as_slice())?;
        let code = body[start + self.marker.len()..].strip_prefix(b" ")?;
        if code.is_empty() || !code.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let code = std::str::from_utf8(code).ok()?.parse().ok()?;
        Some((start, code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame::with_nonce([7; 16])
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn scan(frame: &Frame, chunks: &[&[u8]]) -> (Vec<u8>, Option<i32>) {
        let mut scanner = frame.scanner();
        let mut out = Vec::new();
        for chunk in chunks {
            scanner
                .push(chunk, &mut out)
                .expect("no bytes after the trailer");
        }
        (out, scanner.exit_code())
    }

    #[test]
    fn output_then_trailer_gives_the_output_and_the_exit_code() {
        let frame = frame();
        let trailer = format!("{} 0\n", frame.marker);
        let (out, code) = scan(&frame, &[b"PGDMP data", trailer.as_bytes()]);
        assert_eq!(out, b"PGDMP data");
        assert_eq!(code, Some(0));
    }

    #[test]
    fn a_trailer_split_across_chunks_byte_by_byte_is_still_found() {
        let frame = frame();
        let stream = format!("some output without newline{} 3\n", frame.marker);
        let chunks: Vec<&[u8]> = stream.as_bytes().chunks(1).collect();
        let (out, code) = scan(&frame, &chunks);
        assert_eq!(out, b"some output without newline");
        assert_eq!(code, Some(3));
    }

    #[test]
    fn a_truncated_stream_has_no_exit_code() {
        let frame = frame();
        let stream = format!("data{} 0", frame.marker);
        let (_, code) = scan(&frame, &[stream.as_bytes()]);
        assert_eq!(code, None, "a trailer without its newline is not complete");
        let (_, code) = scan(&frame, &[b"data cut in the middle"]);
        assert_eq!(code, None);
    }

    #[test]
    fn another_commands_marker_in_the_output_is_just_output() {
        let frame = frame();
        let other = Frame::with_nonce([8; 16]);
        let stream = format!("{} 0\nmore", other.marker);
        let (out, code) = scan(
            &frame,
            &[
                stream.as_bytes(),
                format!("{} 0\n", frame.marker).as_bytes(),
            ],
        );
        assert_eq!(out, stream.as_bytes());
        assert_eq!(code, Some(0));
    }

    #[test]
    fn large_output_is_forwarded_whole_while_only_a_trailer_length_is_held() {
        let frame = frame();
        let mut scanner = frame.scanner();
        let data = vec![b'x'; 1 << 20];
        let mut out = Vec::new();
        scanner.push(&data, &mut out).expect("ok");
        assert!(data.len() - out.len() < scanner.max_trailer());
        scanner
            .push(format!("{} 0\n", frame.marker).as_bytes(), &mut out)
            .expect("ok");
        assert_eq!(out, data);
    }

    #[test]
    fn bytes_after_the_trailer_are_an_error_not_output() {
        let frame = frame();
        let mut scanner = frame.scanner();
        let mut out = Vec::new();
        scanner
            .push(format!("ok{} 0\n", frame.marker).as_bytes(), &mut out)
            .expect("ok");
        assert_eq!(scanner.push(b"late", &mut out), Err(AfterTrailer(4)));
        assert_eq!(out, b"ok");
    }

    #[test]
    fn only_sh_c_commands_are_framed_and_stdin_is_closed_without_input() {
        let frame = frame();
        assert_eq!(frame.wrap(&["pg_dump".into()], false), None);
        let wrapped = frame.wrap(&sh("exec pg_dump"), false).expect("framed");
        assert_eq!(wrapped[..2], ["sh".to_string(), "-c".to_string()]);
        assert!(wrapped[2].starts_with("( exec pg_dump\n) </dev/null; rewind_rc=$?;"));
        assert!(wrapped[2].contains(&frame.marker));
        assert!(wrapped[2].contains("read -r rewind_ack"));
        let with_input = frame.wrap(&sh("head -c 3 | cat"), true).expect("framed");
        assert!(with_input[2].starts_with("( head -c 3 | cat\n); rewind_rc=$?;"));
    }

    #[test]
    fn the_wrapped_script_prints_the_trailer_and_waits_for_the_ack() {
        let frame = frame();
        let wrapped = frame
            .wrap(&sh("printf abc; exit 4"), false)
            .expect("framed");
        let output = std::process::Command::new(&wrapped[0])
            .args(&wrapped[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(ACK)?;
                child.wait_with_output()
            })
            .expect("sh runs");
        assert_eq!(output.status.code(), Some(4));
        let (out, code) = scan(&frame, &[&output.stdout]);
        assert_eq!(out, b"abc");
        assert_eq!(code, Some(4));
    }
}
