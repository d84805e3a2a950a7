//! The null MLLP responder of the load benchmark (issue 15): reads MLLP frames and answers
//! each with a fixed `MSA|AA`, parsing and storing nothing. What ordobridge's intake is
//! measured against in the same run: the cost of the sockets, the framing and the load tool
//! alone on this machine.
//!
//!     cargo bench --bench mllp_null [-- PORT]     (prints `PORT <n>`, serves until killed)
//!
//! Two runtime threads, as the machine has two cores.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The one answer, framed.
const ACK: &[u8] = b"\x0bMSH|^~\\&|NULL|NULL|||20261201000000||ACK|NULL|P|2.5\rMSA|AA|NULL\r\x1c\r";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<u16>().ok())
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("PORT {}", listener.local_addr()?.port());
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(serve(stream));
        }
    })
}

/// Answers every complete frame (`0x1c 0x0d` ends one) until the peer closes.
async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut answers = Vec::new();
    loop {
        if filled == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = stream.read(&mut buffer[filled..]).await?;
        if read == 0 {
            return Ok(());
        }
        filled += read;
        let mut start = 0;
        while let Some(end) = buffer[start..filled]
            .windows(2)
            .position(|w| w == b"\x1c\r")
        {
            answers.extend_from_slice(ACK);
            start += end + 2;
        }
        buffer.copy_within(start..filled, 0);
        filled -= start;
        if !answers.is_empty() {
            stream.write_all(&answers).await?;
            answers.clear();
        }
    }
}
