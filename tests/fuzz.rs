//! Fuzzing of every decoder that reads bytes an attacker controls: OTLP/HTTP bodies (protobuf and
//! JSON, through the decompressor), order events, bearer tokens (JWT header and claims), JWK sets
//! fetched from an identity provider, and the configuration loader.
//!
//! Each test runs a seeded, structure-aware mutation loop for a bounded time, under plain
//! `cargo test` on stable (cargo-fuzz needs nightly, libFuzzer and `cargo install cargo-fuzz`,
//! none of which CI has). A crash is a panic, an execution
//! slower than 2 s, or a stack overflow on a 2 MiB (tokio worker) stack; the input is saved under
//! `target/fuzz-crashes/`. See `fuzzing/engine.rs` for the knobs:
//!
//! ```text
//! TRACEGATE_FUZZ_SECONDS=600 TRACEGATE_FUZZ_SEED=$RANDOM cargo test --test fuzz -- --nocapture
//! TRACEGATE_FUZZ_INPUT=target/fuzz-crashes/order_events-17.bin cargo test --test fuzz -- --nocapture
//! ```

mod fuzzing;

use std::sync::OnceLock;

use fastrand::Rng;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use prost::Message;
use serde_json::Value;
use tracegate::auth::{parse_jwks, service_name, AccessControl, TokenVerifier};
use tracegate::receivers::{
    decode_request, decompress, parse_order_events, strip_credentials, to_resource_spans, Encoding, HttpServerConfig,
};
use tracegate::Config;

use fuzzing::generate::{self, nested};
use fuzzing::{fuzz, mutate, seeds};

/// Largest input the byte mutators produce (generators of depth and width may go beyond).
const MAX_LEN: usize = 1 << 20;

/// Order events at `2026-11-20T10:00:00Z`, as the receiver passes `now`.
const NOW_NS: u64 = 1_795_168_800_000_000_000;

fn bombs() -> &'static [(u8, Vec<u8>)] {
    static BOMBS: OnceLock<Vec<(u8, Vec<u8>)>> = OnceLock::new();
    BOMBS.get_or_init(generate::bombs)
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

/// One nesting shape: `prefix open^n leaf close^n suffix`.
struct Shape(&'static str, &'static str, &'static str, &'static str, &'static str);

impl Shape {
    fn generate(&self, rng: &mut Rng, max_depth: usize) -> Vec<u8> {
        let Shape(prefix, open, leaf, close, suffix) = *self;
        nested(prefix, open, leaf, close, suffix, generate::depth(rng).min(max_depth), rng.u8(..8) != 0)
    }

    fn generate_exactly(&self, depth: usize) -> Vec<u8> {
        let Shape(prefix, open, leaf, close, suffix) = *self;
        nested(prefix, open, leaf, close, suffix, depth, true)
    }
}

const ANY_JSON: [Shape; 3] = [Shape("", "[", "1", "]", ""), Shape("", r#"{"a":"#, "1", "}", ""), Shape("", r#"[{"":"#, "null", "}]", "")];

/// A JSON document from `corpus`: tree edits, then sometimes byte edits on the text.
fn mutated_json(rng: &mut Rng, corpus: &[Value], texts: &[Vec<u8>], keys: &[&str], strings: &[&str], dict: &[&[u8]]) -> Vec<u8> {
    let mut bytes = if rng.u8(..4) == 0 {
        pick(rng, texts).clone()
    } else {
        let mut value = pick(rng, corpus).clone();
        mutate::json(rng, &mut value, corpus, keys, strings);
        serde_json::to_vec(&value).expect("a Value serializes")
    };
    if rng.bool() {
        mutate::bytes(rng, &mut bytes, texts, dict, MAX_LEN);
    }
    bytes
}

// ---- OTLP/HTTP bodies --------------------------------------------------------------------------

/// Input: the first byte picks the `Content-Encoding` (see `generate::ENCODINGS`), the rest is
/// the body. The body goes through what `POST /v1/traces` runs before the pipeline.
fn otlp_body(input: &[u8], encoding: Encoding, limits: &HttpServerConfig) {
    let Some((&selector, body)) = input.split_first() else { return };
    let content_encoding = generate::ENCODINGS[selector as usize % generate::ENCODINGS.len()];
    let Ok(body) = decompress(body, content_encoding, limits) else { return };
    let Ok(mut request) = decode_request(&body, encoding) else { return };
    strip_credentials(&mut request.resource_spans);
    request.resource_spans.iter().for_each(|rs| {
        std::hint::black_box(service_name(rs));
    });
    // The gateway writes what it read back out (exporters, `tracegate process`).
    drop(request.encode_to_vec());
    drop(serde_json::to_vec(&request));
}

const PROTOBUF_DICT: [&[u8]; 10] = [
    b"\x0a",
    b"\x12",
    b"\x1a",
    b"\x32",
    b"\x4a",
    b"\x0a\x00",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    b"\x7b",
    b"\x7c",
];

#[test]
fn otlp_protobuf() {
    let corpus: Vec<Vec<u8>> = seeds::otlp_requests().iter().map(Message::encode_to_vec).collect();
    let generate = move |rng: &mut Rng| {
        let payload = match rng.u8(..16) {
            0 => {
                let depth = generate::depth(rng).min(30_000);
                generate::deep_protobuf_attribute(rng, depth)
            }
            1 => {
                let depth = generate::depth(rng);
                generate::deep_protobuf_unknown(rng, depth)
            }
            2 => generate::random_wire(rng),
            3..=5 => {
                let mut bytes = generate::random_request(rng).encode_to_vec();
                if rng.bool() {
                    mutate::bytes(rng, &mut bytes, &corpus, &PROTOBUF_DICT, MAX_LEN);
                }
                bytes
            }
            _ => {
                let mut bytes = pick(rng, &corpus).clone();
                mutate::bytes(rng, &mut bytes, &corpus, &PROTOBUF_DICT, MAX_LEN);
                bytes
            }
        };
        generate::framed(rng, &payload, bombs())
    };
    bombs();
    fuzz("otlp_protobuf", Vec::new(), generate, || {
        let limits = HttpServerConfig::default();
        move |input: &[u8]| otlp_body(input, Encoding::Protobuf, &limits)
    });
}

const SPAN_ATTRIBUTE: &str = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"x","attributes":[{"key":"deep","value":"#;
const SPAN_END: &str = "}]}]}]}]}";

const OTLP_JSON_SHAPES: [Shape; 4] = [
    Shape(SPAN_ATTRIBUTE, r#"{"kvlistValue":{"values":[{"key":"k","value":"#, r#"{"intValue":"1"}"#, "}]}}", SPAN_END),
    Shape(SPAN_ATTRIBUTE, r#"{"arrayValue":{"values":["#, r#"{"boolValue":true}"#, "]}}", SPAN_END),
    // An untagged field buffers whatever it is given before it fails.
    Shape(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"intValue":"#, "[", "1", "]", "}}]}]}]}]}"),
    Shape(r#"{"resourceSpans":"#, "[", "", "]", "}"),
];

const OTLP_JSON_STRINGS: [&str; 10] = [
    "0102030405060708090a0b0c0d0e0f10",
    "0102030405060708",
    "0102030405060708090A0B0C0D0E0F1",
    "zz",
    "AQID",
    "AQID=",
    "-9223372036854775809",
    "18446744073709551616",
    "SPAN_KIND_SERVER",
    "STATUS_CODE_ERROR",
];

const JSON_DICT: [&[u8]; 12] = [b"{", b"}", b"[", b"]", b"\"", b",", b":", b"\\u0000", b"\\ud800", b"null", b"1e999", b"-0"];

#[test]
fn otlp_json() {
    let requests = seeds::otlp_requests();
    let texts: Vec<Vec<u8>> = requests.iter().map(|r| serde_json::to_vec(r).expect("OTLP JSON")).collect();
    let corpus: Vec<Value> = texts.iter().map(|t| serde_json::from_slice(t).expect("JSON")).collect();
    let keys: Vec<String> = mutate::keys_of(&corpus);
    let generate = move |rng: &mut Rng| {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let payload = match rng.u8(..16) {
            0 => pick(rng, &OTLP_JSON_SHAPES).generate(rng, 30_000),
            1 => pick(rng, &ANY_JSON).generate(rng, 100_000),
            2 | 3 => {
                let request = generate::random_request(rng);
                let mut value = serde_json::to_value(&request).expect("OTLP JSON");
                if rng.bool() {
                    mutate::json(rng, &mut value, &corpus, &keys, &OTLP_JSON_STRINGS);
                }
                serde_json::to_vec(&value).expect("a Value serializes")
            }
            _ => mutated_json(rng, &corpus, &texts, &keys, &OTLP_JSON_STRINGS, &JSON_DICT),
        };
        generate::framed(rng, &payload, bombs())
    };
    bombs();
    fuzz("otlp_json", Vec::new(), generate, || {
        let limits = HttpServerConfig::default();
        move |input: &[u8]| otlp_body(input, Encoding::Json, &limits)
    });
}

// ---- Order events ------------------------------------------------------------------------------

/// `n` events, each of its own service, order and time: width rather than depth.
fn wide_order_events(rng: &mut Rng) -> Vec<u8> {
    wide_order_events_of([10, 100, 1_000, 5_000][rng.usize(..4)])
}

fn wide_order_events_of(n: usize) -> Vec<u8> {
    let mut out = b"[".to_vec();
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!(r#"{{"order_id":"A-{i}","service":"svc-{i}","time":"2026-11-20T10:00:00Z"}}"#).as_bytes());
    }
    out.push(b']');
    out
}

const ORDER_EVENT_SHAPES: [Shape; 2] = [
    Shape(r#"{"order_id":"A-1","service":"s","attributes":{"a":"#, "[", "1", "]", "}}"),
    Shape("[", r#"{"order_id":"#, r#""A""#, "}", "]"),
];

#[test]
fn order_events() {
    let corpus = seeds::order_events();
    let texts: Vec<Vec<u8>> = corpus.iter().map(|v| serde_json::to_vec(v).expect("JSON")).collect();
    let keys: Vec<String> = mutate::keys_of(&corpus);
    let generate = move |rng: &mut Rng| {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        match rng.u8(..32) {
            0 | 1 => pick(rng, &ORDER_EVENT_SHAPES).generate(rng, 100_000),
            2 | 3 => pick(rng, &ANY_JSON).generate(rng, 100_000),
            4 => wide_order_events(rng),
            _ => mutated_json(rng, &corpus, &texts, &keys, &seeds::TIMES, &JSON_DICT),
        }
    };
    // Regression: one event per service took time quadratic in the services (to_resource_spans).
    let regressions = vec![wide_order_events_of(20_000)];
    fuzz("order_events", regressions, generate, || {
        |input: &[u8]| {
            let Ok(parsed) = parse_order_events(input, NOW_NS) else { return };
            // What `POST /v1/order-events` does with them: the reply and the spans.
            drop(serde_json::to_vec(&parsed.rejected));
            let mut resource_spans = to_resource_spans(&parsed.events);
            strip_credentials(&mut resource_spans);
        }
    });
}

// ---- Bearer tokens -----------------------------------------------------------------------------

const TOKEN_DICT: [&[u8]; 9] = [b".", b"..", b"=", b"-", b"_", b"+/", b" ", b"\x00", b"eyJ"];

const JWT_STRINGS: [&str; 8] = ["HS256", "ES256", "none", "ec-1", seeds::ISSUER, seeds::OTHER_ISSUER, "tracegate", "/realm_access/roles"];

/// A token from parts: JSON header and claims (tree-edited, sometimes byte-edited before
/// encoding), signed with the key its `alg` names, sometimes edited as text afterwards.
fn token(rng: &mut Rng, keys: &seeds::JwtKeys, headers: &[Value], claims: &[Value], words: &[&str]) -> Vec<u8> {
    let mut header = pick(rng, headers).clone();
    let mut body = pick(rng, claims).clone();
    if rng.u8(..3) == 0 {
        mutate::json(rng, &mut header, headers, words, &JWT_STRINGS);
    }
    if rng.u8(..3) != 0 {
        mutate::json(rng, &mut body, claims, words, &JWT_STRINGS);
    }
    let alg = header.get("alg").and_then(Value::as_str).map(str::to_string);
    let mut header = serde_json::to_vec(&header).expect("a Value serializes");
    let mut body = serde_json::to_vec(&body).expect("a Value serializes");
    match rng.u8(..12) {
        0 => mutate::bytes(rng, &mut header, &[], &JSON_DICT, 64 << 10),
        1 => mutate::bytes(rng, &mut body, &[], &JSON_DICT, 64 << 10),
        2 => header = pick(rng, &ANY_JSON).generate(rng, 10_000),
        3 => {
            body =
                nested(r#"{"iss":"https://sso.shop.test/realms/shop","roles":"#, "[", "1", "]", "}", generate::depth(rng).min(10_000), true)
        }
        4 => header = [&b"\xff\xfe{\"alg\":\"HS256\"}"[..], &[0xc0, 0x80]].concat(),
        _ => {}
    }
    let mut text = seeds::sign(&header, &body, keys, alg.as_deref()).into_bytes();
    if rng.u8(..6) == 0 {
        mutate::bytes(rng, &mut text, &[], &TOKEN_DICT, 64 << 10);
    }
    text
}

#[test]
fn jwt() {
    let keys = seeds::JwtKeys::generate();
    let headers = seeds::jwt_headers();
    let claims: Vec<Value> = [seeds::jwt_claims(seeds::ISSUER), seeds::jwt_claims(seeds::OTHER_ISSUER)].concat();
    let words: Vec<String> = mutate::keys_of(&[headers.clone(), claims.clone()].concat());
    let yaml = seeds::auth_yaml(&keys.secret, &keys.ec_public_pem);
    // Regression: a validly signed `exp` of u64::MAX overflowed `exp + leeway` (TokenVerifier::accept).
    let mut forever = seeds::jwt_claims(seeds::ISSUER)[0].clone();
    forever["exp"] = u64::MAX.into();
    let regressions = vec![seeds::sign(br#"{"alg":"HS256"}"#, forever.to_string().as_bytes(), &keys, Some("HS256")).into_bytes()];
    let generate = move |rng: &mut Rng| {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        token(rng, &keys, &headers, &claims, &words)
    };
    fuzz("jwt", regressions, generate, move || {
        let config = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("the JWT campaign's config: {e}"));
        let verifier = TokenVerifier::new(&config.auth).expect("the campaign's keys load");
        let control = AccessControl::new(&config.auth, None).expect("the campaign's keys load");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        move |input: &[u8]| {
            let token = String::from_utf8_lossy(input);
            drop(verifier.precheck(&token));
            drop(runtime.block_on(verifier.verify(&token)));
            // As the receivers and the API read it: from the Authorization header.
            if let Ok(value) = HeaderValue::from_bytes(&[b"Bearer ", input].concat()) {
                let mut headers = HeaderMap::new();
                headers.insert(AUTHORIZATION, value);
                drop(control.precheck(&headers, Some("203.0.113.7"), "/v1/traces"));
                drop(runtime.block_on(control.authenticate(&headers, Some("203.0.113.7"), "/v1/traces")));
            }
        }
    });
}

// ---- JWK sets ----------------------------------------------------------------------------------

#[test]
fn jwks() {
    let corpus = seeds::jwks();
    let texts: Vec<Vec<u8>> = corpus.iter().map(|v| serde_json::to_vec(v).expect("JSON")).collect();
    let keys: Vec<String> = mutate::keys_of(&corpus);
    let generate = move |rng: &mut Rng| {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        match rng.u8(..16) {
            0 => pick(rng, &ANY_JSON).generate(rng, 100_000),
            1 => nested(r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","x5c":"#, "[", "1", "]", "}]}", generate::depth(rng), true),
            _ => mutated_json(
                rng,
                &corpus,
                &texts,
                &keys,
                &["RSA", "EC", "OKP", "oct", "P-256", "P-384", "P-521", "Ed25519", "X25519", "sig", "enc"],
                &JSON_DICT,
            ),
        }
    };
    fuzz("jwks", Vec::new(), generate, || {
        |input: &[u8]| {
            drop(parse_jwks(input));
        }
    });
}

// ---- Configuration -----------------------------------------------------------------------------

const CONFIG_STRINGS: [&str; 24] = [
    "0s",
    "1ns",
    "18446744073709551615s",
    "584942417355y",
    "99999999999999999999h",
    "-1s",
    "16EiB",
    "18446744073709551615GiB",
    "0",
    "65536",
    "[::]:65535",
    "0.0.0.0:0",
    "127.0.0.1:4317",
    "http://[::1",
    "https://",
    "(((((a*)*)*)*)*",
    "a{1000}{1000}",
    "(?<order_id>",
    "${env:HUGE}",
    "${env:NUMBER}",
    "${env:YAML}",
    "${env:NESTED}",
    "${env:MISSING:-${env:EMPTY}}",
    "$${env:X}",
];

const YAML_DICT: [&[u8]; 16] = [
    b": ",
    b"- ",
    b"\n",
    b"\n  ",
    b"[",
    b"{",
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"!!binary ",
    b"!tag ",
    b"---\n",
    b"? ",
    b"|\n",
    b"\t",
    b"${env:",
];

/// YAML that byte edits rarely produce: alias fan-out, deep flow and block nesting, tags.
fn yaml_special(rng: &mut Rng) -> Vec<u8> {
    match rng.u8(..5) {
        0 => {
            // Nine-fold alias fan-out per level ("billion laughs").
            let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
            for i in 1..rng.usize(2..12) {
                let refs = vec![format!("*a{}", i - 1); 9].join(", ");
                text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
            }
            text.push_str("receivers: {otlp: {http: {}}}\nservice: {pipelines: {traces: {receivers: [otlp], exporters: [x]}}}\n");
            text.into_bytes()
        }
        1 => nested("receivers: ", "[", "a", "]", "\n", generate::depth(rng), rng.bool()),
        2 => nested("processors: ", "{a: ", "1", "}", "\n", generate::depth(rng), rng.bool()),
        3 => {
            let n = generate::depth(rng).min(1_000);
            let mut text = String::from("exporters:\n");
            (1..=n).for_each(|i| text.push_str(&format!("{}a:\n", " ".repeat(i))));
            text.into_bytes()
        }
        _ => b"receivers: !!binary aGVsbG8=\nexporters: !custom {debug: {}}\nservice: !!map {pipelines: &p {}}\napi: *p\n".to_vec(),
    }
}

/// Configurations are small; a larger one only costs time (parsing is linear, ~0.5 s per MiB in
/// a debug build).
const CONFIG_MAX_LEN: usize = 256 << 10;

#[test]
fn config() {
    let texts: Vec<Vec<u8>> = seeds::configs().into_iter().map(String::into_bytes).collect();
    let corpus: Vec<Value> =
        texts.iter().map(|t| serde_yaml_ng::from_slice(t).expect("a shipped config is YAML with string keys")).collect();
    let keys: Vec<String> = mutate::keys_of(&corpus);
    let generate = move |rng: &mut Rng| {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        match rng.u8(..16) {
            0 => yaml_special(rng),
            1..=3 => {
                let mut text = pick(rng, &texts).clone();
                mutate::bytes(rng, &mut text, &texts, &YAML_DICT, CONFIG_MAX_LEN);
                text
            }
            _ => {
                let mut value = pick(rng, &corpus).clone();
                mutate::json(rng, &mut value, &corpus, &keys, &CONFIG_STRINGS);
                let mut text = serde_yaml_ng::to_string(&value).expect("a Value serializes").into_bytes();
                text.truncate(CONFIG_MAX_LEN);
                if rng.u8(..4) == 0 {
                    mutate::bytes(rng, &mut text, &texts, &YAML_DICT, CONFIG_MAX_LEN);
                }
                text
            }
        }
    };
    // Regression: deep flow nesting cost the YAML parser quadratic time before it refused it.
    let regressions =
        vec![nested("processors: ", "{a: ", "1", "}", "\n", 30_000, true), nested("receivers: ", "[", "", "]", "\n", 100_000, true)];
    fuzz("config", regressions, generate, || {
        |input: &[u8]| {
            let text = String::from_utf8_lossy(input);
            if let Ok(config) = Config::from_yaml_with_env(&text, &seeds::config_env) {
                drop(config.summary());
                std::hint::black_box(config.query_backend());
            }
        }
    });
}

// ---- The harness itself ------------------------------------------------------------------------

/// The corpora are valid and the nesting generators build what they claim, so the campaigns start
/// on the paths real traffic takes (a token that never verifies would never reach the claims).
#[tokio::test]
async fn seeds_and_generators_reach_the_decoders() {
    for request in seeds::otlp_requests() {
        let json = serde_json::to_vec(&request).unwrap();
        assert_eq!(decode_request(&json, Encoding::Json).unwrap(), request);
        assert_eq!(decode_request(&request.encode_to_vec(), Encoding::Protobuf).unwrap(), request);
    }
    for body in seeds::order_events() {
        let parsed = parse_order_events(body.to_string().as_bytes(), NOW_NS).unwrap();
        assert!(parsed.rejected.is_empty(), "{body}: {:?}", parsed.rejected);
    }
    for text in seeds::configs() {
        Config::from_yaml_with_env(&text, &seeds::config_env).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    let keys = seeds::JwtKeys::generate();
    let config = Config::from_yaml(&seeds::auth_yaml(&keys.secret, &keys.ec_public_pem)).unwrap();
    let verifier = TokenVerifier::new(&config.auth).unwrap();
    let headers = seeds::jwt_headers();
    for (header, iss, alg) in [(&headers[0], seeds::ISSUER, "HS256"), (&headers[1], seeds::OTHER_ISSUER, "ES256")] {
        let claims = seeds::jwt_claims(iss)[0].to_string();
        let token = seeds::sign(header.to_string().as_bytes(), claims.as_bytes(), &keys, Some(alg));
        let verified = verifier.verify(&token).await.unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.principal.subject, "ada");
    }
    assert_eq!(parse_jwks(seeds::jwks()[0].to_string().as_bytes()).unwrap().len(), 3);

    // Twenty levels of nested AnyValue are valid OTLP in both encodings; 100,000 are refused.
    let mut rng = Rng::with_seed(7);
    let nested_depth = |request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest| {
        let mut value = request.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.clone();
        let mut depth = 0;
        while let Some(opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(kind) }) = value {
            use opentelemetry_proto::tonic::common::v1::any_value::Value as Kind;
            value = match kind {
                Kind::KvlistValue(list) => list.values[0].value.clone(),
                Kind::ArrayValue(array) => array.values.first().cloned(),
                _ => None,
            };
            depth += 1;
        }
        depth
    };
    let proto = decode_request(&generate::deep_protobuf_attribute(&mut rng, 20), Encoding::Protobuf).unwrap();
    assert_eq!(nested_depth(&proto), 21);
    let json = decode_request(&OTLP_JSON_SHAPES[0].generate_exactly(20), Encoding::Json).unwrap();
    assert_eq!(nested_depth(&json), 21);
    assert!(decode_request(&generate::deep_protobuf_attribute(&mut rng, 100_000), Encoding::Protobuf).is_err());
    assert!(decode_request(&OTLP_JSON_SHAPES[0].generate_exactly(100_000), Encoding::Json).is_err());
}
