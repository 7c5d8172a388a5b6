mod support;

#[tokio::test]
async fn static_token_is_injected() {
    let echo = support::Echo::start().await;
    let proxy = support::start_proxy(&format!(
        "[providers.ri]\ntype = \"static\"\nheaders = {{ Authorization = \"Token abc\" }}\n[[routes]]\nprefix = \"/ri/\"\nupstream = \"{}/v1/\"\nprovider = \"ri\"\n",
        echo.url()
    ))
    .await;
    let r = support::client()
        .get(proxy.url("/ri/x?y=1"))
        .header("authorization", "Bearer mine")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = echo.last();
    assert_eq!(last.path, "/v1/x");
    assert_eq!(last.query.as_deref(), Some("y=1"));
    assert_eq!(last.headers["authorization"], vec!["Token abc"]);
    proxy.stop().await;
}
