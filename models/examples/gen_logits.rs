// Temporary (helper 2, not committed): logits of our Gemma 3 for the last N positions of the
// given ids (prefill in CHUNK-sized pieces up to there, then one token at a time), as raw f32.
use std::io::Write;
fn main() {
    let ids: Vec<u32> = std::env::args()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let last: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let out = std::env::args().nth(3).unwrap();
    let path = std::path::Path::new(
        "/root/.cache/hotline-triage/models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
    );
    let mut f = std::fs::File::open(path).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let m =
        triage_models::gemma3::Gemma3::load(&ct, &mut f, path, &candle_core::Device::Cpu).unwrap();
    let mut cache = m.new_cache();
    let chunk: usize = std::env::var("CHUNK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let split = ids.len() - last + 1;
    let mut w = std::fs::File::create(out).unwrap();
    let mut logits = None;
    for c in ids[..split].chunks(chunk) {
        logits = Some(m.forward(c, &mut cache).unwrap());
    }
    let mut dump = |l: candle_core::Tensor| {
        let v: Vec<f32> = l.to_vec1().unwrap();
        w.write_all(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
            .unwrap();
    };
    dump(logits.unwrap());
    for &t in &ids[split..] {
        dump(m.forward(&[t], &mut cache).unwrap());
    }
}
