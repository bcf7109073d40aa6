//! `metaug learn-policy` and `metaug experiment` refuse bad settings with
//! an error naming the option, before any data is read or work is done.

use std::process::Command;

fn metaug(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_metaug"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_meta_settings_are_clear_errors() {
    // the data directory does not exist: each case must fail on its
    // option, not on the missing data
    let dir = "/no/such/dataset";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["learn-policy", dir, "--tau", "nan"], "--tau"),
        (vec!["learn-policy", dir, "--tau", "0"], "--tau"),
        (vec!["learn-policy", dir, "--meta-lr=-0.1"], "--meta-lr"),
        (vec!["learn-policy", dir, "--meta-lr", "inf"], "--meta-lr"),
        (
            vec!["learn-policy", dir, "--magnitude-lr", "0"],
            "--magnitude-lr",
        ),
        (
            vec!["experiment", "fashion-mnist", "--magnitude-lr", "nan"],
            "--magnitude-lr",
        ),
        (
            vec!["learn-policy", dir, "--inner-steps", "0"],
            "inner-steps",
        ),
        (
            vec!["learn-policy", dir, "--inner-steps", "1000000"],
            "inner-steps",
        ),
        (vec!["learn-policy", dir, "--steps", "0"], "steps"),
        (vec!["learn-policy", dir, "--images", "9"], "--images"),
        (vec!["learn-policy", dir, "--meta-start", "1"], "meta-start"),
        (
            vec!["learn-policy", dir, "--meta-every", "0"],
            "--meta-every",
        ),
        (
            vec!["learn-policy", dir, "--family", "two-ops"],
            "possible values: independent, one-op",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--family",
                "two-ops",
            ],
            "possible values: independent, one-op",
        ),
        (vec!["experiment", "cifar"], "unknown experiment"),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--model",
                "vit",
            ],
            "possible values: cnn, mlp",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--only",
                "maml,dali",
            ],
            "unknown row `dali`",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--neumann",
                "0",
            ],
            "--neumann",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--phi-knots",
                "65",
            ],
            "--phi-knots",
        ),
        (
            vec!["experiment", "fashion-mnist", "--data", dir, "--lr=-1"],
            "--lr",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--tau",
                "1e999",
            ],
            "--tau",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--meta-lr",
                "x",
            ],
            "--meta-lr",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--seeds",
                "18446744073709551615",
            ],
            "seeds",
        ),
        (
            vec!["experiment", "fashion-mnist", "--data", dir, "--seeds", "0"],
            "seeds",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--inner-steps",
                "0",
            ],
            "inner-steps",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--steps",
                "99999999999",
            ],
            "steps",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--val-batch",
                "0",
            ],
            "--val-batch",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--meta-start",
                "nan",
            ],
            "meta-start",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--phi-init",
                "high",
            ],
            "phi-init",
        ),
        (
            vec![
                "experiment",
                "fashion-mnist",
                "--data",
                dir,
                "--lr-schedule",
                "step",
            ],
            "possible values: cosine, constant",
        ),
        // every setting valid: the error is the missing data, named
        (vec!["experiment", "fashion-mnist", "--data", dir], dir),
        (vec!["learn-policy", dir], dir),
    ];
    for (args, want) in cases {
        let (ok, err) = metaug(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(
            err.contains(want),
            "{args:?}: {err:?} does not mention {want:?}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}
