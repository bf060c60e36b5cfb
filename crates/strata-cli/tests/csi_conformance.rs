//! Conformance of the Kubernetes CSI driver (`strata csi`) to the CSI specification v1.12.
mod common;

use common::csi::*;
use common::*;
use strata_csi::pb;

#[test]
fn identity() {
    let c = Cluster::new("csi-identity");
    let d = CsiDriver::start(&c, "all", "node-a");
    let mut id = d.identity();
    let info = d.block_on(id.get_plugin_info(pb::GetPluginInfoRequest {})).expect("info").into_inner();
    assert_eq!(info.name, "csi.strata.io");
}
