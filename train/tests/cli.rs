//! The `train` binary's dry run: what a file would do, for every kind, with any overrides.

use std::process::Command;

fn train(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_train"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("the train binary runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn dry_runs_take_the_step_override_for_every_kind() {
    for (file, want) in [
        ("experiments/mnist-tiny.toml", "parameters: 651041"),
        (
            "experiments/mnist-classifier.toml",
            "classifier for mnist images",
        ),
    ] {
        let (ok, text) = train(&["--config", file, "--steps", "10", "--dry-run"]);
        assert!(ok && text.contains(want), "{file}: {text}");
    }
    let (ok, text) = train(&[
        "--config",
        "experiments/mnist-classifier.toml",
        "--resume",
        "checkpoints/nowhere",
    ]);
    assert!(
        !ok && text.contains("--resume is for diffusion runs"),
        "{text}"
    );

    // `--set` reaches any key and meets the file's checks; flags are keys too.
    let (ok, text) = train(&[
        "--config",
        "experiments/mnist-tiny.toml",
        "--set",
        "model.preset=mnist",
        "--dry-run",
    ]);
    assert!(ok && text.contains("parameters: 6469889"), "{text}");
    for (args, want) in [
        (
            &[
                "--config",
                "experiments/mnist-tiny.toml",
                "--set",
                "train.nope=1",
            ][..],
            "unknown field `nope`",
        ),
        (
            &[
                "--config",
                "experiments/mnist-tiny.toml",
                "--set",
                "train.lr=nan",
            ][..],
            "train.lr",
        ),
        (
            &[
                "--config",
                "experiments/mnist-classifier.toml",
                "--checkpoint-every",
                "5",
            ][..],
            "unknown field `checkpoint_every`",
        ),
    ] {
        let mut all = args.to_vec();
        all.push("--dry-run");
        let (ok, text) = train(&all);
        assert!(
            !ok && text.contains(want) && text.lines().count() == 1,
            "{args:?}: {text}"
        );
    }
}
