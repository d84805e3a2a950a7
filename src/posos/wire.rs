//! Small helpers shared by the Posos client, its authentication and the simulator: bounded body
//! reads (untrusted text is made readable by [`crate::text::readable_line`]).

/// Reads a response body, keeping at most `max` bytes so that a misbehaving peer cannot grow
/// the heap; the flag says whether the body was cut.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(chunk.get(..room).unwrap_or_default());
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}
