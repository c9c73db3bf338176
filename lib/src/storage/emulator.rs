//! Azurite, the Azure Storage emulator: what tests and local trials need
//! beyond object_store, which reads and writes blobs but cannot create a
//! container.
//!
//! Point Weir at Azurite with `AZURE_STORAGE_USE_EMULATOR=true` and
//! `AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:PORT` (object_store's emulator
//! mode: account `devstoreaccount1`, its well-known key), and locations
//! `az://CONTAINER/path`.

use std::io::{Read, Write};
use std::net::TcpStream;

use base64::Engine as _;

/// The emulator's account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// The emulator's well-known account key (public; it is in Microsoft's docs).
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Creates `container` in the Azurite blob service at `endpoint`
/// (`http://127.0.0.1:10000`); an existing container is fine.
pub fn create_container(endpoint: &str, container: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("{endpoint}: {e}"))?;
    let host = url.host_str().ok_or_else(|| format!("{endpoint}: no host"))?;
    let port = url.port_or_known_default().unwrap_or(10000);
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let version = "2021-08-06";
    // SharedKey: verb, eleven empty standard headers, x-ms-* headers,
    // then /account/path (the emulator's path starts with the account).
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
    );
    let key = base64::engine::general_purpose::STANDARD.decode(KEY).map_err(|e| e.to_string())?;
    let signature = base64::engine::general_purpose::STANDARD
        .encode(crate::pii::hmac::HmacSha256::new(&key).mac(to_sign.as_bytes()));
    let request = format!(
        "PUT /{ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: {host}:{port}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut stream =
        TcpStream::connect((host, port)).map_err(|e| format!("cannot reach Azurite at {endpoint}: {e}"))?;
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let status = response.split_whitespace().nth(1).unwrap_or("");
    match status {
        "201" | "409" => Ok(()),
        _ => Err(format!("creating container {container}: {}", response.lines().next().unwrap_or(""))),
    }
}
