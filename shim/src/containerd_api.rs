//! One question to containerd's gRPC API: does it still have a container
//! record (`containerd.services.containers.v1.Containers/Get`)? A unary
//! gRPC call spoken over HTTP/2 (`h2`) on containerd's unix socket, the
//! request encoded by hand (`GetContainerRequest { string id = 1; }`): the
//! shim needs only the call's status, not a gRPC stack.

use bytes::Bytes;
use std::time::Duration;

/// How long one question may take (connect, handshake, answer).
const TIMEOUT: Duration = Duration::from_secs(5);

/// gRPC's `NOT_FOUND`.
const GRPC_NOT_FOUND: u32 = 5;

/// What containerd said about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// It has the record.
    Yes,
    /// It answered NOT_FOUND: no such container in the namespace.
    No,
}

/// The gRPC message framing of `GetContainerRequest { id }`: the
/// uncompressed flag, the length (big endian) and the protobuf.
pub fn get_request_frame(id: &str) -> Vec<u8> {
    let mut msg = vec![0x0a];
    let mut len = id.len() as u64;
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            msg.push(b);
            break;
        }
        msg.push(b | 0x80);
    }
    msg.extend_from_slice(id.as_bytes());
    let mut frame = vec![0];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

/// Asks containerd at `address` (its gRPC socket, `unix://` optional)
/// whether namespace `namespace` has container `id`. An error is "no
/// answer" (containerd down, restarting, or some other failure): the caller
/// must not take it for a no.
pub async fn container_known(address: &str, namespace: &str, id: &str) -> Result<Known, String> {
    match tokio::time::timeout(TIMEOUT, ask(address, namespace, id)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "containerd at {address} did not answer within {TIMEOUT:?}"
        )),
    }
}

fn grpc_status(h: &http::HeaderMap) -> Option<(u32, String)> {
    let code = h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    let msg = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((code, msg))
}

async fn ask(address: &str, namespace: &str, id: &str) -> Result<Known, String> {
    let path = address.trim_start_matches("unix://");
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| format!("connecting to containerd at {path}: {e}"))?;
    let (client, conn) = h2::client::handshake(stream)
        .await
        .map_err(|e| format!("HTTP/2 handshake with containerd at {path}: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let mut client = client
            .ready()
            .await
            .map_err(|e| format!("containerd at {path}: {e}"))?;
        let req = http::Request::builder()
            .method("POST")
            .uri("http://containerd/containerd.services.containers.v1.Containers/Get")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("containerd-namespace", namespace)
            .body(())
            .map_err(|e| format!("building the request: {e}"))?;
        let (resp, mut send) = client
            .send_request(req, false)
            .map_err(|e| format!("asking containerd at {path}: {e}"))?;
        send.send_data(Bytes::from(get_request_frame(id)), true)
            .map_err(|e| format!("asking containerd at {path}: {e}"))?;
        let resp = resp
            .await
            .map_err(|e| format!("containerd at {path} answered: {e}"))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!(
                "containerd at {path} answered HTTP {}",
                resp.status()
            ));
        }
        let (parts, mut body) = resp.into_parts();
        // A "trailers-only" answer (an error) has the status in its headers.
        let status = match grpc_status(&parts.headers) {
            Some(s) => s,
            None => {
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.map_err(|e| format!("reading containerd's answer: {e}"))?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                let trailers = body
                    .trailers()
                    .await
                    .map_err(|e| format!("reading containerd's answer: {e}"))?
                    .unwrap_or_default();
                grpc_status(&trailers).ok_or("containerd's answer has no grpc-status")?
            }
        };
        match status {
            (0, _) => Ok(Known::Yes),
            (GRPC_NOT_FOUND, _) => Ok(Known::No),
            (code, msg) => Err(format!(
                "containerd at {path} answered gRPC status {code}: {msg}"
            )),
        }
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_frame_is_grpc_framed_protobuf() {
        assert_eq!(
            get_request_frame("c1"),
            vec![0, 0, 0, 0, 4, 0x0a, 2, b'c', b'1']
        );
        // A 200-byte id: the length is a two-byte varint.
        let long = "x".repeat(200);
        let f = get_request_frame(&long);
        assert_eq!(&f[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
        assert_eq!(f.len(), 5 + 203);
    }

    #[tokio::test]
    async fn no_containerd_is_no_answer_not_a_no() {
        let d = tempfile::tempdir().expect("tempdir");
        let sock = d.path().join("none.sock");
        let r = container_known(&sock.display().to_string(), "default", "c1").await;
        assert!(r.is_err(), "{r:?}");
    }
}
