//! ONC RPC (RFC 5531) over TCP: record marking, call headers with AUTH_UNIX credentials, and
//! reply headers.

use std::io::Read;

use crate::xdr::{Decoder, XdrError, put_u32};

/// Largest record accepted: a 1 MiB WRITE plus its headers, with room to spare.
pub const MAX_RECORD: usize = (1 << 20) + 64 * 1024;
/// Most groups an AUTH_UNIX credential may carry (RFC 5531).
const MAX_GROUPS: usize = 16;
/// Largest credential or verifier body (RFC 5531).
const MAX_AUTH: usize = 400;

/// Why a connection's input could not be read as RPC records.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The socket failed or closed mid-record.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A record is larger than [`MAX_RECORD`].
    #[error("record of {0} bytes or more is larger than the {MAX_RECORD}-byte limit")]
    TooLarge(usize),
}

/// Most bytes read into a record before any of them arrived: a fragment's header only claims a
/// length, so its buffer grows with the bytes received (doubling from this), never ahead of them.
const READ_AHEAD: usize = 64 * 1024;

/// Reads one record (all its fragments); `None` at a clean end of the connection. The buffer
/// never holds more than twice the bytes received plus [`READ_AHEAD`], whatever a header claims.
pub fn read_record(r: &mut impl Read) -> Result<Option<Vec<u8>>, RecordError> {
    let mut out = Vec::new();
    loop {
        let mut hdr = [0u8; 4];
        match r.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && out.is_empty() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let word = u32::from_be_bytes(hdr);
        let last = word & 0x8000_0000 != 0;
        let len = (word & 0x7fff_ffff) as usize;
        let total = out.len() + len;
        if total > MAX_RECORD {
            return Err(RecordError::TooLarge(total));
        }
        while out.len() < total {
            let start = out.len();
            let step = (total - start).min(start.max(READ_AHEAD));
            out.reserve_exact(step);
            out.resize(start + step, 0);
            r.read_exact(&mut out[start..])?;
        }
        if last {
            return Ok(Some(out));
        }
    }
}

/// Frames a reply as one record.
pub fn frame(mut body: Vec<u8>) -> Vec<u8> {
    let len = body.len() as u32 | 0x8000_0000;
    body.splice(0..0, len.to_be_bytes());
    body
}

/// The caller's identity from AUTH_UNIX (AUTH_NULL callers have none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnixCred {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub gids: Vec<u32>,
}

/// A decoded call header; the procedure's arguments follow in `args`.
pub struct Call<'a> {
    /// Transaction id, echoed in the reply.
    pub xid: u32,
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub proc_: u32,
    /// AUTH_UNIX credential, if that flavor was used.
    pub cred: Option<UnixCred>,
    /// The credential flavor.
    pub flavor: u32,
    /// The arguments.
    pub args: Decoder<'a>,
}

/// A record that is not a well-formed call: the reply to send, if any is possible.
#[derive(Debug)]
pub enum BadCall {
    /// Undecodable before the transaction id: nothing can be answered.
    Unanswerable(XdrError),
    /// Not RPC version 2.
    RpcMismatch(u32),
    /// A malformed credential.
    BadCred(u32),
    /// A reply or an unknown message type where a call was expected; ignored.
    NotACall,
}

/// Credential flavors.
pub const AUTH_NULL: u32 = 0;
/// Credential flavors.
pub const AUTH_UNIX: u32 = 1;

/// Decodes a call's header.
pub fn parse_call(record: &[u8]) -> Result<Call<'_>, BadCall> {
    let mut d = Decoder::new(record);
    let xid = d.u32().map_err(BadCall::Unanswerable)?;
    let mtype = d.u32().map_err(BadCall::Unanswerable)?;
    if mtype != 0 {
        return Err(BadCall::NotACall);
    }
    let rpcvers = d.u32().map_err(|_| BadCall::RpcMismatch(xid))?;
    if rpcvers != 2 {
        return Err(BadCall::RpcMismatch(xid));
    }
    let head = (|| -> Result<_, XdrError> {
        let prog = d.u32()?;
        let vers = d.u32()?;
        let proc_ = d.u32()?;
        let flavor = d.u32()?;
        let body = d.opaque(MAX_AUTH)?;
        let _verf_flavor = d.u32()?;
        let _verf = d.opaque(MAX_AUTH)?;
        Ok((prog, vers, proc_, flavor, body))
    })();
    let (prog, vers, proc_, flavor, body) = head.map_err(|_| BadCall::BadCred(xid))?;
    let cred = if flavor == AUTH_UNIX { Some(parse_unix(body).map_err(|_| BadCall::BadCred(xid))?) } else { None };
    Ok(Call { xid, prog, vers, proc_, cred, flavor, args: d })
}

fn parse_unix(body: &[u8]) -> Result<UnixCred, XdrError> {
    let mut d = Decoder::new(body);
    let _stamp = d.u32()?;
    let _machine = d.opaque(255)?;
    let uid = d.u32()?;
    let gid = d.u32()?;
    let n = d.u32()? as usize;
    if n > MAX_GROUPS {
        return Err(XdrError::TooLong { len: n, max: MAX_GROUPS });
    }
    let mut gids = Vec::with_capacity(n);
    for _ in 0..n {
        gids.push(d.u32()?);
    }
    d.finish()?;
    Ok(UnixCred { uid, gid, gids })
}

/// Accepted-reply status codes (RFC 5531 accept_stat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Results follow.
    Success,
    /// The program is not served here.
    ProgUnavail,
    /// The version is not served; the supported range follows.
    ProgMismatch(u32, u32),
    /// No such procedure.
    ProcUnavail,
    /// The arguments could not be decoded.
    GarbageArgs,
    /// The server failed.
    SystemErr,
}

/// The start of an accepted reply (results are appended after it for `Success`).
pub fn accepted(xid: u32, stat: Accept) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_u32(&mut out, xid);
    put_u32(&mut out, 1); // REPLY
    put_u32(&mut out, 0); // MSG_ACCEPTED
    put_u32(&mut out, AUTH_NULL); // verifier
    put_u32(&mut out, 0);
    match stat {
        Accept::Success => put_u32(&mut out, 0),
        Accept::ProgUnavail => put_u32(&mut out, 1),
        Accept::ProgMismatch(lo, hi) => {
            put_u32(&mut out, 2);
            put_u32(&mut out, lo);
            put_u32(&mut out, hi);
        }
        Accept::ProcUnavail => put_u32(&mut out, 3),
        Accept::GarbageArgs => put_u32(&mut out, 4),
        Accept::SystemErr => put_u32(&mut out, 5),
    }
    out
}

/// A denied reply: RPC version mismatch.
pub fn rpc_mismatch(xid: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    for v in [xid, 1, 1, 0, 2, 2] {
        put_u32(&mut out, v);
    }
    out
}

/// Authentication errors (RFC 5531 auth_stat).
pub const AUTH_BADCRED: u32 = 1;
/// Authentication errors (RFC 5531 auth_stat).
pub const AUTH_TOOWEAK: u32 = 5;

/// A denied reply: authentication error.
pub fn auth_error(xid: u32, stat: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    for v in [xid, 1, 1, 1, stat] {
        put_u32(&mut out, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_bytes(cred_body: &[u8], flavor: u32) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [7u32, 0, 2, 100003, 3, 1, flavor, cred_body.len() as u32] {
            put_u32(&mut m, v);
        }
        m.extend_from_slice(cred_body);
        m.resize(m.len() + crate::xdr::pad(cred_body.len()), 0);
        for v in [0u32, 0, 42] {
            put_u32(&mut m, v);
        }
        m
    }

    fn unix_body(groups: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [1u32, 4] {
            put_u32(&mut b, v);
        }
        b.extend_from_slice(b"host");
        for v in [1000u32, 100, groups] {
            put_u32(&mut b, v);
        }
        for g in 0..groups.min(20) {
            put_u32(&mut b, g);
        }
        b
    }

    #[test]
    fn parses_unix_credentials() {
        let m = call_bytes(&unix_body(2), AUTH_UNIX);
        let mut c = parse_call(&m).unwrap();
        assert_eq!((c.xid, c.prog, c.vers, c.proc_), (7, 100003, 3, 1));
        assert_eq!(c.cred, Some(UnixCred { uid: 1000, gid: 100, gids: vec![0, 1] }));
        assert_eq!(c.args.u32().unwrap(), 42);
    }

    #[test]
    fn refuses_too_many_groups_and_wrong_versions() {
        let m = call_bytes(&unix_body(17), AUTH_UNIX);
        assert!(matches!(parse_call(&m), Err(BadCall::BadCred(7))));
        let mut m = call_bytes(&[], AUTH_NULL);
        m[8..12].copy_from_slice(&3u32.to_be_bytes());
        assert!(matches!(parse_call(&m), Err(BadCall::RpcMismatch(7))));
        assert!(matches!(parse_call(&[0, 0]), Err(BadCall::Unanswerable(_))));
    }

    #[test]
    fn records_join_fragments_and_refuse_oversize() {
        let mut input = Vec::new();
        input.extend_from_slice(&2u32.to_be_bytes());
        input.extend_from_slice(b"ab");
        input.extend_from_slice(&(0x8000_0000u32 | 1).to_be_bytes());
        input.extend_from_slice(b"c");
        let mut r = &input[..];
        assert_eq!(read_record(&mut r).unwrap(), Some(b"abc".to_vec()));
        assert!(read_record(&mut r).unwrap().is_none());

        let big = (0x8000_0000u32 | (MAX_RECORD as u32 + 1)).to_be_bytes();
        let mut r = &big[..];
        assert!(matches!(read_record(&mut r), Err(RecordError::TooLarge(_))));
    }

    /// A reader that records the largest buffer it was asked to fill.
    struct Probe<'a> {
        data: &'a [u8],
        largest_ask: usize,
    }

    impl Read for Probe<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.largest_ask = self.largest_ask.max(buf.len());
            let n = self.data.len().min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    // Found by fuzzing (fuzz/fuzz_targets/record_stream.rs, minimized to `07 00 01 ff ff`): a
    // fragment header alone made `read_record` allocate the whole length it claimed (up to
    // MAX_RECORD, 1.06 MiB zeroed) before any of it arrived, so each stalled connection cost a
    // megabyte for four bytes sent.
    #[test]
    fn a_header_alone_does_not_allocate_what_it_claims() {
        let hdr = (0x8000_0000u32 | (1 << 20)).to_be_bytes();
        let mut r = Probe { data: &hdr, largest_ask: 0 };
        assert!(
            matches!(read_record(&mut r), Err(RecordError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof)
        );
        assert!(r.largest_ask <= READ_AHEAD, "asked to fill {} bytes after a 4-byte header", r.largest_ask);

        // A full-size record still arrives whole, in fragments or not.
        let body: Vec<u8> = (0..MAX_RECORD).map(|i| i as u8).collect();
        let first = MAX_RECORD / 3;
        let mut input = (first as u32).to_be_bytes().to_vec();
        input.extend_from_slice(&body[..first]);
        input.extend_from_slice(&(0x8000_0000u32 | (MAX_RECORD - first) as u32).to_be_bytes());
        input.extend_from_slice(&body[first..]);
        let mut r = Probe { data: &input, largest_ask: 0 };
        assert_eq!(read_record(&mut r).unwrap(), Some(body));
        assert!(read_record(&mut r).unwrap().is_none());
    }
}
