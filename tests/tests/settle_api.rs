//! The settlement server's HTTP API is described for other implementers: `GET /openapi.json`
//! lists exactly the routes the server answers, each with its answers and its errors.

use meshpay_protocol::PrintableKey as _;
use meshpay_tests::SettleServer;
use serde_json::Value;
use std::collections::BTreeSet;

/// Every route of the API: method and path.
const ROUTES: [(&str, &str); 21] = [
    ("get", "/.well-known/meshpay-issuer"),
    ("get", "/v1/issuer"),
    ("post", "/v1/allowances"),
    ("post", "/v1/settle"),
    ("get", "/v1/receipts"),
    ("get", "/v1/fraud-proofs"),
    ("get", "/v1/revocations"),
    ("post", "/v1/statement"),
    ("post", "/admin/revocations"),
    ("post", "/admin/accounts"),
    ("post", "/admin/accounts/{device}/credit"),
    ("post", "/admin/accounts/{device}/debit"),
    ("get", "/admin/accounts/{device}"),
    ("get", "/admin/reconciliation"),
    ("get", "/admin/risk"),
    ("get", "/admin/exposure"),
    ("post", "/admin/release"),
    ("post", "/admin/clock"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/openapi.json"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let root = tempfile::tempdir().unwrap();
    let server = SettleServer::new(root.path(), "issuer");
    let http = reqwest::Client::new();
    let body = http
        .get(format!("{}/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            documented.insert((method.clone(), path.clone()));
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            // Every route that can fail says how, with the error body.
            let quiet = [
                "/healthz",
                "/metrics",
                "/openapi.json",
                "/v1/issuer",
                "/.well-known/meshpay-issuer",
            ];
            if !quiet.contains(&path.as_str()) {
                let errors: Vec<&String> = responses
                    .keys()
                    .filter(|s| s.starts_with('4') || s.starts_with('5'))
                    .collect();
                assert!(!errors.is_empty(), "{method} {path} documents no error");
                for e in errors {
                    let schema = &responses[e]["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {e}"
                    );
                }
            }
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, expected);
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());

    // Every documented route is served (no 404 or 405 for its method) …
    let device = meshpay_protocol::DeviceSecret::from_seed(&[1; 32])
        .public()
        .to_text();
    for (method, path) in ROUTES {
        let url = format!("{}{}", server.url, path.replace("{device}", &device));
        let req = match method {
            "get" => http.get(&url),
            _ => http
                .post(&url)
                .header("content-type", "application/json")
                .body("{}"),
        };
        let status = req.send().await.unwrap().status().as_u16();
        assert!(status != 404 && status != 405, "{method} {path}: {status}");
    }
    // … and nothing else is.
    for (method, path) in [
        ("get", "/v1/settle"),
        ("get", "/admin"),
        ("post", "/healthz"),
        ("get", "/v2/issuer"),
    ] {
        let url = format!("{}{path}", server.url);
        let req = match method {
            "get" => http.get(&url),
            _ => http.post(&url),
        };
        let status = req.send().await.unwrap().status().as_u16();
        assert!(status == 404 || status == 405, "{method} {path}: {status}");
    }
}
