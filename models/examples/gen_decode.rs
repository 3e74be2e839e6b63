// Temporary (helper 2, not committed): decode-only timing of Gemma3::forward, for perf.
fn main() {
    let path = std::path::Path::new(
        "/root/.cache/hotline-triage/models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
    );
    let mut f = std::fs::File::open(path).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let m =
        triage_models::gemma3::Gemma3::load(&ct, &mut f, path, &candle_core::Device::Cpu).unwrap();
    let steps: usize = std::env::args().nth(1).map_or(200, |s| s.parse().unwrap());
    let ctx: usize = std::env::args().nth(2).map_or(64, |s| s.parse().unwrap());
    let mut cache = m.new_cache();
    let prompt: Vec<u32> = (0..ctx as u32).map(|i| 1000 + i).collect();
    for b in prompt.chunks(64) {
        m.forward(b, &mut cache).unwrap();
    }
    let t = std::time::Instant::now();
    for i in 0..steps {
        m.forward(&[2000 + i as u32], &mut cache).unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "decode {:.2} ms/token, {:.1} tok/s at context {ctx}",
        s * 1e3 / steps as f64,
        steps as f64 / s
    );
}
