//! A connection's byte stream read as RPC records by `read_record` until it ends or fails,
//! compared with a plain model of record marking (RFC 5531 section 11). The first input byte
//! sets how many bytes each read returns (so fragments and headers arrive split anywhere). Each
//! record is at most `MAX_RECORD` bytes, and reading one never allocates much more than arrived.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use libfuzzer_sys::fuzz_target;
use strata_nfs_wire::rpc::{MAX_RECORD, RecordError, read_record};

/// Counts live heap bytes and their peak, to bound what reading a record allocates.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            // Old and new blocks may both be live during the copy.
            let now = LIVE.fetch_add(new, Relaxed) + new;
            PEAK.fetch_max(now, Relaxed);
            LIVE.fetch_sub(l.size(), Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocation allowed beyond what arrived while reading one record: the reader's first chunk
/// plus small error values.
const SLACK: usize = 64 * 1024 + 4096;

/// A socket that returns at most `chunk` bytes per read and counts what it delivered.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
    delivered: usize,
}

impl io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.len().min(self.chunk).min(buf.len());
        let (head, tail) = self.data.split_at(n);
        buf[..n].copy_from_slice(head);
        self.data = tail;
        self.delivered += n;
        Ok(n)
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Record(Vec<u8>),
    End,
    TooLarge(usize),
    Eof,
}

/// What reading one record from `s` should give, and the bytes it consumes.
fn model(s: &mut &[u8]) -> Outcome {
    let mut out = Vec::new();
    loop {
        if s.len() < 4 {
            // A short header at the start of a record is the connection's clean end.
            *s = &[];
            return if out.is_empty() { Outcome::End } else { Outcome::Eof };
        }
        let word = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
        *s = &s[4..];
        let len = (word & 0x7fff_ffff) as usize;
        if out.len() + len > MAX_RECORD {
            return Outcome::TooLarge(out.len() + len);
        }
        if s.len() < len {
            *s = &[];
            return Outcome::Eof;
        }
        out.extend_from_slice(&s[..len]);
        *s = &s[len..];
        if word & 0x8000_0000 != 0 {
            return Outcome::Record(out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else { return };
    let chunk = match first {
        0 => usize::MAX,
        c => usize::from(c),
    };
    let mut r = Trickle { data: stream, chunk, delivered: 0 };
    let mut expect = stream;
    loop {
        let want = model(&mut expect);
        let start = r.delivered;
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        let got = read_record(&mut r);
        let arrived = r.delivered - start;
        let used = PEAK.load(Relaxed) - base;
        let got = match got {
            Ok(Some(rec)) => {
                assert!(rec.len() <= MAX_RECORD, "record of {} bytes", rec.len());
                Outcome::Record(rec)
            }
            Ok(None) => Outcome::End,
            Err(RecordError::TooLarge(n)) => Outcome::TooLarge(n),
            Err(RecordError::Io(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
                Outcome::Eof
            }
        };
        // A record's bytes are kept (and, for the last one, the vector may be at most twice
        // them): allow that, the chunk read ahead and small values, never what was only claimed.
        assert!(used <= 3 * arrived + SLACK, "allocated {used} bytes for {arrived} that arrived");
        match (&got, &want) {
            (Outcome::Record(_), _) | (Outcome::End, _) => assert_eq!(got, want),
            // After an error the rest of the stream is not read; the error must still match.
            _ => {
                assert_eq!(got, want);
                break;
            }
        }
        if got == Outcome::End {
            break;
        }
        if let Outcome::Record(_) = got {
            assert_eq!(r.data.len(), expect.len(), "consumed a different number of bytes");
        }
    }
});
