//! The admin API over a real server on 127.0.0.1:0: `POST /admin/drain` takes an admin
//! token of the admin key and nothing else, and starts the drain `/readyz` reports.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::time::Duration;

use common::{ADMIN_SECRET, SECRET, http, http_get, start, token};
use signaling::TokenKey;
use signaling::admin::AdminKey;
use signaling::token::unix_now;

fn admin_token(secret: &[u8], exp_offset: i64) -> String {
    let mut claims = AdminKey::claims("ops", Duration::from_secs(60));
    claims.exp = unix_now().saturating_add_signed(exp_offset);
    AdminKey::new(secret).issue(&claims).unwrap()
}

#[tokio::test]
async fn drain_takes_an_admin_token_and_nothing_else() {
    let (addr, plane) = start(false).await;
    let post = |bearer: Option<String>| {
        let addr = addr.clone();
        async move { http(&addr, "POST", "/admin/drain", bearer.as_deref()).await }
    };
    let refused = [
        ("no token", None),
        ("a join token", Some(token("r", "alice"))),
        (
            "a join token signed with the admin key",
            Some(
                TokenKey::new(ADMIN_SECRET)
                    .issue(&TokenKey::claims("r", "a", None, Duration::from_secs(60)))
                    .unwrap(),
            ),
        ),
        (
            "an admin token of the join key",
            Some(admin_token(SECRET, 60)),
        ),
        (
            "an expired admin token",
            Some(admin_token(ADMIN_SECRET, -1)),
        ),
        ("garbage", Some("x.y.z".into())),
    ];
    for (what, bearer) in refused {
        let response = post(bearer).await;
        assert!(response.starts_with("HTTP/1.1 401"), "{what}: {response}");
        assert!(
            response.to_lowercase().contains("www-authenticate: bearer"),
            "{what}: {response}"
        );
    }
    assert!(http_get(&addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    assert!(
        http_get(&addr, "/admin/drain")
            .await
            .starts_with("HTTP/1.1 405")
    );

    let good = admin_token(ADMIN_SECRET, 60);
    let response = post(Some(good.clone())).await;
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    assert!(
        response.ends_with(r#"{"draining":true,"started":true}"#),
        "{response}"
    );
    assert!(plane.draining.load(std::sync::atomic::Ordering::Relaxed));
    let ready = http_get(&addr, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.ends_with("draining\n"),
        "{ready}"
    );
    // Asked again: under way already.
    let response = post(Some(good)).await;
    assert!(
        response.ends_with(r#"{"draining":true,"started":false}"#),
        "{response}"
    );
}
