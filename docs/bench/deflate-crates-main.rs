use std::time::Instant;

fn payload(seq: u64) -> Vec<u8> {
    // A realistic ~1 KiB publication: an order-book / feed update as apps publish them.
    let mut items = Vec::new();
    for i in 0..6u64 {
        items.push(serde_json::json!({
            "sku": format!("SKU-{:05}", (seq * 7 + i * 131) % 99991),
            "name": (["Espresso beans 1kg", "Oat milk", "Paper cups (50)", "Ceramic mug", "Grinder burr set", "Milk jug"][i as usize]),
            "qty": (seq + i) % 9 + 1,
            "price_cents": 199 + (seq * 13 + i * 17) % 5000,
            "in_stock": (seq + i) % 3 != 0
        }));
    }
    let v = serde_json::json!({
        "type": "order.updated",
        "id": format!("ord_{:012x}", seq.wrapping_mul(0x9E3779B97F4A7C15) >> 16),
        "seq": seq,
        "ts": "2026-11-30T04:31:07.412Z",
        "customer": {"id": 100000 + seq % 5000, "name": "Ada Lovelace", "tier": "gold", "locale": "en-GB"},
        "status": (["pending", "paid", "packed", "shipped"][(seq % 4) as usize]),
        "items": items,
        "shipping": {"method": "express", "address": {"city": "London", "postcode": "N1 9GU", "country": "GB"}},
        "total_cents": 12345 + seq % 1000,
        "currency": "GBP", "note": "Leave at the side door if nobody answers, thanks!"
    });
    serde_json::to_vec(&v).unwrap()
}

fn trades(seq: u64) -> Vec<u8> {
    // A table-like publication: the last trades of a market, same keys in every row.
    let mut rows = Vec::new();
    for i in 0..8u64 {
        let n = seq * 8 + i;
        rows.push(serde_json::json!({
            "id": 81_234_000 + n,
            "price": format!("{}.{:02}", 64_000 + (n * 37) % 900, (n * 13) % 100),
            "size": format!("0.{:04}", (n * 7919) % 10_000),
            "side": (if n % 3 == 0 { "sell" } else { "buy" }),
            "ts": 1_764_477_067_412u64 + n * 37
        }));
    }
    serde_json::to_vec(&serde_json::json!({"market": "BTC-USD", "seq": seq, "trades": rows})).unwrap()
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let p = if which == "trades" { trades(42) } else { payload(42) };
    println!("payload {} bytes", p.len());
    let n = 200_000;
    // flate2 (zlib-rs backend), raw deflate, sync flush, reset per message (no context takeover)
    for level in [1u32, 2, 3, 4, 6] {
        let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
        let mut out = Vec::with_capacity(4096);
        let t = Instant::now();
        let mut total = 0;
        for _ in 0..n {
            out.clear();
            c.reset();
            c.compress_vec(&p, &mut out, flate2::FlushCompress::Sync).unwrap();
            total += out.len() - 4;
        }
        let el = t.elapsed();
        println!("flate2/zlib-rs level {level}: {} bytes, {:.2} µs/msg", total / n, el.as_secs_f64() * 1e6 / n as f64);
        // inflate
        let comp = out.clone();
        let mut d = flate2::Decompress::new(false);
        let mut o = Vec::with_capacity(4096);
        let t = Instant::now();
        for _ in 0..n {
            o.clear();
            d.reset(false);
            d.decompress_vec(&comp, &mut o, flate2::FlushDecompress::Sync).unwrap();
        }
        assert_eq!(o, p);
        println!("  inflate zlib-rs: {:.2} µs/msg", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    for level in [1u8, 6] {
        let mut c = miniz_oxide::deflate::core::CompressorOxide::new(
            miniz_oxide::deflate::core::create_comp_flags_from_zip_params(level as i32, -15, 0),
        );
        let mut out = vec![0u8; 4096];
        let t = Instant::now();
        let mut total = 0;
        for _ in 0..n {
            c.reset();
            let (st, _, o) = miniz_oxide::deflate::core::compress(&mut c, &p, &mut out, miniz_oxide::deflate::core::TDEFLFlush::Sync);
            assert_eq!(st, miniz_oxide::deflate::core::TDEFLStatus::Okay);
            total += o - 4;
        }
        let el = t.elapsed();
        println!("miniz_oxide level {level}: {} bytes, {:.2} µs/msg", total / n, el.as_secs_f64() * 1e6 / n as f64);
    }
    for level in [1i32, 6] {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
        let mut out = vec![0u8; 4096];
        let t = Instant::now();
        let mut total = 0;
        for _ in 0..n {
            total += c.deflate_compress(&p, &mut out).unwrap();
        }
        let el = t.elapsed();
        println!("libdeflater level {level}: {} bytes (final block, no sync flush), {:.2} µs/msg", total / n, el.as_secs_f64() * 1e6 / n as f64);
    }
    // Memory of a deflate / inflate state (zlib-rs), window 15
    println!("size_of Compress {} Decompress {}", std::mem::size_of::<flate2::Compress>(), std::mem::size_of::<flate2::Decompress>());
}
