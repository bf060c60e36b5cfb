//! Packing of replies built from `nfs3_types`' structures.

use nfs3_types::xdr_codec::Pack;

pub use strata_nfs_wire::xdr::{pad, put_u32};

/// Packs a reply structure after what `out` holds.
pub fn pack_into(out: &mut Vec<u8>, v: &impl Pack) {
    out.reserve(v.packed_size());
    // Writing into a Vec cannot fail; a packing error would be a bug in the reply built here,
    // which the tests of every procedure would show.
    if let Err(e) = v.pack(out) {
        tracing::error!(error = %e, "could not encode an NFS reply");
    }
}
