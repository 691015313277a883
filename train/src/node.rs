//! A node server: this machine's device, served to training runs elsewhere through burn's remote
//! backend (`train node`). The training process keeps the autodiff graph; the node runs the
//! primitive operations of the shards it is sent.

use std::net::TcpListener;

use anyhow::{Result, bail};
use tweedie_core::device::BackendKind;

/// Serves `backend`'s device on `listener` until the process is stopped, saying where on stderr
/// once the device is ready.
pub fn serve(listener: TcpListener, backend: BackendKind) -> Result<()> {
    if !matches!(
        backend,
        BackendKind::Flex | BackendKind::Ndarray | BackendKind::Wgpu
    ) {
        bail!(
            "--backend {backend}: a node serves flex, ndarray or wgpu (burn's remote server takes \
             no libtorch device)"
        );
    }
    let device = backend.device()?;
    let addr = listener.local_addr()?;
    eprintln!(
        "node: serving {backend} on {addr} (no authentication: keep it on a private network); \
         train --devices flex,remote:{addr}"
    );
    burn::server::RemoteServer::new([device])
        .serve(burn::server::WebSocketTransport::from_listener(listener))
        .map_err(|e| anyhow::anyhow!("node on {:?}: {e:?}", backend))
}
