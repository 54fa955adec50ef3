//! Basic auth with credentials from a docker config file, login/logout,
//! and distribution's token auth with real JWTs from a test token server.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use hoist_registry::{
    AuthFile, Client, Credential, ErrorKind, PullOptions, PushOptions, Reference,
};
use hoist_testutil::Registry;

use crate::require_registry;
use crate::util::*;

fn auth_file_client(file: &AuthFile) -> Client {
    Client::new(options(Arc::new(file.clone()))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_credentials_from_a_docker_config_file() {
    require_registry!();
    hoist_testutil::require_program!("htpasswd");
    let reg = Registry::start_basic_auth("alice", "s3cret");
    let image = make_image(&[100 << 10], 10);
    let target = Reference::parse(&format!("{}/private/app:1", reg.addr)).unwrap();

    // Anonymous: refused with the registry's own words.
    let err = client()
        .push(
            &target,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("authentication required"), "{err}");

    // Credentials from a config.json given by path (as REGISTRY_AUTH_FILE
    // would name it).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let client = auth_file_client(&AuthFile::at(&path));
    client
        .push(
            &target,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let (_d, dest) = empty_store();
    let pulled = client
        .pull(&target, dest.clone(), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest(), image.manifest.digest());
    assert_same_blobs(image.store.as_ref(), dest.as_ref(), &image.blob_digests());

    // A wrong password is refused.
    let wrong = base64::engine::general_purpose::STANDARD.encode("alice:nope");
    let bad_path = dir.path().join("bad.json");
    std::fs::write(
        &bad_path,
        format!(
            r#"{{"auths":{{"http://{}/v2/":{{"auth":"{wrong}"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let err = auth_file_client(&AuthFile::at(&bad_path))
        .resolve(&target)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");

    // The same credentials through a credential helper named in credHelpers.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-testhelper");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}}'\n",
            reg.addr
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let helper_path = dir.path().join("helper.json");
    std::fs::write(
        &helper_path,
        format!(r#"{{"credHelpers":{{"{}":"testhelper"}}}}"#, reg.addr),
    )
    .unwrap();
    let file = AuthFile::at(&helper_path).with_helper_dirs(vec![bin]);
    let resolved = auth_file_client(&file).resolve(&target).await.unwrap();
    assert_eq!(resolved.descriptor.digest(), image.manifest.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_checks_then_saves_and_logout_forgets() {
    require_registry!();
    hoist_testutil::require_program!("htpasswd");
    let reg = Registry::start_basic_auth("carol", "pa55");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker/config.json");
    let file = AuthFile::at(&path);
    let client = client();

    let err = hoist_registry::login(&client, &reg.addr, &Credential::new("carol", "bad"), &file)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!path.exists(), "a failed login wrote the auth file");

    hoist_registry::login(&client, &reg.addr, &Credential::new("carol", "pa55"), &file)
        .await
        .unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        saved["auths"][reg.addr.as_str()]["auth"],
        base64::engine::general_purpose::STANDARD.encode("carol:pa55")
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A new client reading that file can push.
    let image = make_image(&[], 11);
    let target = Reference::parse(&format!("{}/mine/app:1", reg.addr)).unwrap();
    auth_file_client(&file)
        .push(
            &target,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();

    assert!(hoist_registry::logout(&reg.addr, &file).unwrap());
    assert!(!hoist_registry::logout(&reg.addr, &file).unwrap());
    let err = auth_file_client(&file).resolve(&target).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_with_real_jwts() {
    require_registry!();
    let tokens = TokenServer::start("bob", "hunter2");
    let reg = Registry::start_with(&tokens.registry_yaml());
    let image = make_image(&[300 << 10], 12);
    let one = Reference::parse(&format!("{}/tok/one:1", reg.addr)).unwrap();
    let two = Reference::parse(&format!("{}/tok/two:1", reg.addr)).unwrap();

    // Anonymous clients get pull-only tokens: pushing is refused.
    let err = client()
        .push(
            &one,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");

    let client = Client::new(options(static_credentials(&reg.addr, "bob", "hunter2"))).unwrap();
    client
        .push(
            &one,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let requests = tokens.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("scope=repository%3Atok%2Fone%3Apull%2Cpush")
                && r.contains("service=hoist-test-registry")),
        "{requests:?}"
    );
    // One token serves the whole push (it is cached per scope). Counted
    // among authenticated requests only: the anonymous push above may have
    // left a request in flight when it gave up.
    let issued_for_push = tokens.issued_authenticated.load(Ordering::SeqCst);
    assert_eq!(issued_for_push, 1, "{issued_for_push} tokens: {requests:?}");
    let log = reg.log();
    assert!(!log.contains("token signed by untrusted key"), "{log}");

    // A mount needs a token for both repositories.
    let mut mount_options = PushOptions::default();
    for d in image.blob_digests() {
        mount_options.mount_sources.insert(d, vec![one.clone()]);
    }
    let pushed = client
        .push(&two, &image.manifest, image.store.clone(), &mount_options)
        .await
        .unwrap();
    assert_eq!(pushed.mounted, image.blob_digests().len());
    let requests = tokens.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("tok%2Ftwo%3Apull%2Cpush") && r.contains("tok%2Fone%3Apull")),
        "{requests:?}"
    );

    // Anonymous pulls work with a pull token.
    let (_d, dest) = empty_store();
    let pulled = crate::util::client()
        .pull(&two, dest.clone(), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest(), image.manifest.digest());
    assert_same_blobs(image.store.as_ref(), dest.as_ref(), &image.blob_digests());

    // An identity token in the auth file (what `docker login` stores for
    // OAuth logins) is exchanged by the refresh-token flow.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"{REFRESH_TOKEN}"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let three = Reference::parse(&format!("{}/tok/three:1", reg.addr)).unwrap();
    auth_file_client(&AuthFile::at(&path))
        .push(
            &three,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let requests = tokens.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.starts_with("POST ")
            && r.contains("grant_type=refresh_token")
            && r.contains("tok%2Fthree%3Apull%2Cpush")),
        "{requests:?}"
    );

    // Wrong credentials: the token endpoint's refusal is quoted.
    let bad = Client::new(options(static_credentials(&reg.addr, "bob", "wrong"))).unwrap();
    let err = bad.resolve(&one).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(
        err.to_string().contains("wrong user name or password"),
        "{err}"
    );
}
