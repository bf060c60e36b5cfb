//! One RPC record as it arrives from a client: the call header (with AUTH_UNIX credentials),
//! then the arguments of whichever program and procedure it names, with the checks that must
//! hold whatever the bytes: nothing borrowed outside the input, no field over its protocol
//! maximum, a decoder's `remaining` never growing, and a successful decode using every byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_nfs_wire::args::{CreateHow, DATA_MAX, DirOp, FH_MAX, NAME_MAX_DECODE, NodeKind, PATH_MAX};
use strata_nfs_wire::rpc::{AUTH_UNIX, parse_call};
use strata_nfs_wire::{Decoder, MountCall, NfsCall, decode_mount, decode_nfs, decode_portmap, xdr::pad};

const NFS: u32 = 100003;
const MOUNT: u32 = 100005;
const PORTMAP: u32 = 100000;

/// `part` is a sub-slice of `whole` (so it was borrowed from the input, not read past it).
fn within(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fn check_bytes(b: &[u8], max: usize, input: &[u8]) {
    assert!(b.len() <= max, "{} bytes over the maximum {max}", b.len());
    assert!(within(b, input), "borrowed bytes outside the input");
}

fn check_dirop(d: &DirOp<'_>, input: &[u8]) {
    check_bytes(d.dir, FH_MAX, input);
    check_bytes(d.name, NAME_MAX_DECODE, input);
}

fn check_nfs(call: &NfsCall<'_>, input: &[u8]) {
    match call {
        NfsCall::Null => {}
        NfsCall::Getattr(fh)
        | NfsCall::Readlink(fh)
        | NfsCall::Fsstat(fh)
        | NfsCall::Fsinfo(fh)
        | NfsCall::Pathconf(fh)
        | NfsCall::Setattr(fh, ..)
        | NfsCall::Access(fh, _)
        | NfsCall::Read(fh, ..)
        | NfsCall::Readdir(fh, ..)
        | NfsCall::Readdirplus(fh, ..)
        | NfsCall::Commit(fh, ..) => check_bytes(fh, FH_MAX, input),
        NfsCall::Write { fh, stable, data, .. } => {
            check_bytes(fh, FH_MAX, input);
            check_bytes(data, DATA_MAX, input);
            assert!(data.len() <= input.len(), "WRITE data longer than the input");
            assert!(*stable <= 2, "stable_how {stable}");
        }
        NfsCall::Create(d, how) => {
            check_dirop(d, input);
            if let CreateHow::Unchecked(s) | CreateHow::Guarded(s) = how {
                assert!(s.mode.is_none_or(|m| m <= 0o7777));
            }
        }
        NfsCall::Mkdir(d, s) => {
            check_dirop(d, input);
            assert!(s.mode.is_none_or(|m| m <= 0o7777));
        }
        NfsCall::Symlink(d, _, target) => {
            check_dirop(d, input);
            check_bytes(target, PATH_MAX, input);
        }
        NfsCall::Mknod(d, kind) => {
            check_dirop(d, input);
            if let NodeKind::Chr(s, ..) | NodeKind::Blk(s, ..) | NodeKind::Sock(s) | NodeKind::Fifo(s) = kind {
                assert!(s.mode.is_none_or(|m| m <= 0o7777));
            }
        }
        NfsCall::Remove(d) | NfsCall::Rmdir(d) | NfsCall::Lookup(d) => check_dirop(d, input),
        NfsCall::Rename(a, b) => {
            check_dirop(a, input);
            check_dirop(b, input);
        }
        NfsCall::Link(fh, d) => {
            check_bytes(fh, FH_MAX, input);
            check_dirop(d, input);
        }
    }
}

/// Decodes `args` as program `prog`'s procedure `proc_` and checks the result.
fn decode(prog: u32, proc_: u32, d: &mut Decoder<'_>, args: &[u8]) {
    let before = d.remaining();
    let done = match prog {
        NFS => match decode_nfs(proc_, d) {
            Ok(Some(c)) => {
                check_nfs(&c, args);
                true
            }
            Ok(None) => false,
            Err(_) => false,
        },
        MOUNT => match decode_mount(proc_, d) {
            Ok(Some(MountCall::Mnt(p) | MountCall::Umnt(p))) => {
                check_bytes(p, PATH_MAX, args);
                true
            }
            Ok(Some(_)) => true,
            _ => false,
        },
        _ => matches!(decode_portmap(proc_, d), Ok(Some(_))),
    };
    assert!(d.remaining() <= before, "remaining grew");
    if done {
        assert_eq!(d.remaining(), 0, "a decoded call left bytes unread");
    }
}

/// Drives a decoder field by field (the fields chosen by `script`, 3 bits each) and checks that
/// each successful read consumes exactly its encoded size and `remaining` never grows.
fn step_by_step(mut script: u32, args: &[u8]) {
    let mut d = Decoder::new(args);
    for _ in 0..64 {
        let before = d.remaining();
        let op = script & 7;
        script = script.rotate_right(3);
        let used = match op {
            0 => d.u32().map(|_| 4),
            1 => d.u64().map(|_| 8),
            2 => d.bool().map(|_| 4),
            3 => d.opaque(FH_MAX).map(|b| 4 + b.len() + pad(b.len())),
            4 => d.opaque(usize::MAX).map(|b| {
                assert!(within(b, args));
                4 + b.len() + pad(b.len())
            }),
            5 => d.fixed::<8>().map(|_| 8),
            6 => d.fixed::<3>().map(|_| 4),
            _ => d.sattr().map(|_| before - d.remaining()),
        };
        let after = d.remaining();
        assert!(after <= before, "remaining grew");
        match used {
            Ok(n) => assert_eq!(before - after, n, "op {op} consumed the wrong number of bytes"),
            Err(_) => break,
        }
        if after == 0 {
            assert!(d.finish().is_ok());
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut call) = parse_call(data) else { return };
    let before = call.args.remaining();
    assert!(before <= data.len());
    let args = &data[data.len() - before..];
    if let Some(cred) = &call.cred {
        assert_eq!(call.flavor, AUTH_UNIX);
        assert!(cred.gids.len() <= 16, "{} groups", cred.gids.len());
    } else {
        assert_ne!(call.flavor, AUTH_UNIX);
    }
    match call.prog {
        NFS | MOUNT | PORTMAP => decode(call.prog, call.proc_, &mut call.args, args),
        _ => {
            // Programs not served: still exercise every decoder on these bytes.
            for prog in [NFS, MOUNT, PORTMAP] {
                decode(prog, call.proc_, &mut Decoder::new(args), args);
            }
        }
    }
    step_by_step(call.xid, args);
});
