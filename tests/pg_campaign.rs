//! A campaign in PostgreSQL, through the real binary: `--db postgres://…` (or `WANBATCH_DB`)
//! works for every command — `import`, `run`, `status`, `export`, `retry`, `cancel`, `report`,
//! `reconcile` — against a private PostgreSQL the test starts (`wanbatch::pglocal`), and a
//! second runner on the same campaign works beside the first without taking its jobs.
//! Skipped with a message when PostgreSQL is not installed, unless `WANBATCH_REQUIRE_PG=1`.

mod common;

use common::*;

async fn pg_env(test: &str) -> Option<Env> {
    let server = wanbatch::pglocal::shared_for_tests(test).await?;
    let url = server.fresh_database(test).await.unwrap();
    Some(Env::with_pg(fast_fake(), url).await)
}

fn db(env: &Env) -> String {
    env.db().to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_on_a_campaign_in_postgresql() {
    let Some(env) = pg_env("every_command_works_on_a_campaign_in_postgresql").await else {
        return;
    };
    let mut text = manifest(12);
    text.push_str("bad1,https://img.example/x.jpg,[fail] this one fails,81,480p,1\n");
    text.push_str("later,https://img.example/y.jpg,cancelled before it runs,81,480p,2\n");
    let m = env.write("m.csv", &text);
    let db = db(&env);

    // import, then a dry-run import of the same file: nothing new.
    let out = cmd(&env, &["import", m.to_str().unwrap(), "--db", &db]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
    let out = cmd(&env, &["import", m.to_str().unwrap(), "--db", &db, "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
    assert!(
        stdout(&out).contains("0 would be new jobs, 14 already in"),
        "{}",
        stdout(&out)
    );
    // The URL's password never shows.
    assert!(!stdout(&out).contains("secret"), "{}", stdout(&out));

    let out = cmd(&env, &["cancel", "--db", &db, "--ids", "later"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));

    // run, by WANBATCH_DB this time.
    let run = env.run_cmd(&[], &[]);
    let args: Vec<String> = run
        .as_std()
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let at = args.iter().position(|a| a == "--db").unwrap();
    let mut run = env.bin();
    run.args(args[..at].iter().chain(args[at + 2..].iter()));
    run.env("WANBATCH_DB", &db);
    let out = finish(run).await;
    assert_eq!(out.status.code(), Some(1), "one job failed: {}", text_of(&out));
    assert!(
        stdout(&out).contains("14 jobs: 12 done, 1 failed, 1 cancelled"),
        "{}",
        stdout(&out)
    );

    let jobs = env.export().await;
    assert_eq!(jobs.len(), 14);
    let done: Vec<_> = jobs.iter().filter(|j| j["state"] == "done").cloned().collect();
    assert_eq!(done.len(), 12);
    env.assert_videos_match(&done);
    assert_eq!(env.fake.stats().submits.len(), 13, "one submit per job run, none twice");

    let out = cmd(&env, &["status", "--db", &db]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
    assert!(stdout(&out).contains("done"), "{}", stdout(&out));
    // The runner that worked it, stopped now.
    assert!(
        stdout(&out).contains("runners (last day): ") && stdout(&out).contains(" stopped "),
        "{}",
        stdout(&out)
    );

    report(&env, &[]).await;
    let page = std::fs::read_to_string(env.out().join("report.html")).unwrap();
    assert!(
        page.contains("j11") && page.contains("bad1"),
        "the report lists the jobs"
    );

    let out = cmd(&env, &["reconcile", "--db", &db]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));

    // retry the failed one: pending again, and a second run leaves it failed again (the fake
    // fails it every time), with the others untouched.
    let out = cmd(&env, &["retry", "--db", &db, "--failed"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
    assert!(text_of(&out).contains('1'), "{}", text_of(&out));
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text_of(&out));
    assert_eq!(env.fake.stats().submits.len(), 14, "only the retried job went again");
}

fn text_of(out: &std::process::Output) -> String {
    text(out)
}
