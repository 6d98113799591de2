//! `odc generate` end to end on the tiny reference decoders (scripts/hf_reference.py; `ODC_HF_MODELS`
//! points at them): text in, the greedy continuation transformers produced out, streamed as text.

use std::path::PathBuf;
use std::process::Command;

fn models() -> PathBuf {
    let dir = std::env::var("ODC_HF_MODELS").map(PathBuf::from).unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("build/hf-models")
    });
    assert!(dir.join("llama/text_prompt.json").is_file(), "{} has no reference checkpoints: run scripts/test.sh", dir.display());
    dir
}

/// Runs `odc generate` and returns (exit code, stdout, stderr).
fn odc_generate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_odc")).arg("generate").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

struct TextPrompt {
    text: String,
    greedy: Vec<i64>,
}

fn text_prompt(name: &str) -> TextPrompt {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(models().join(name).join("text_prompt.json")).unwrap()).unwrap();
    TextPrompt {
        text: v["text"].as_str().unwrap().to_string(),
        greedy: v["greedy"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect(),
    }
}

/// The ids of the `generated:` line, checking the line after it is the speed line.
fn generated(stdout: &str) -> Vec<i64> {
    let lines: Vec<&str> = stdout.lines().collect();
    let n = lines.len();
    assert!(n >= 2, "{stdout}");
    let speeds = lines[n - 1];
    assert!(speeds.starts_with("prefill_tok_s=") && speeds.contains(" decode_tok_s="), "{speeds}");
    let ids = lines[n - 2].strip_prefix("generated: ").unwrap_or_else(|| panic!("no generated line: {stdout}"));
    ids.split(' ').map(|t| t.parse().unwrap()).collect()
}

fn check_text_generation(name: &str, threads: &str) -> String {
    let want = text_prompt(name);
    let dir = models().join(name);
    let (code, stdout, stderr) = odc_generate(&[dir.to_str().unwrap(), "--prompt", &want.text, "-n", "32", "--threads", threads]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(generated(&stdout), want.greedy, "{name} at {threads} thread(s)");
    // The streamed text: the prompt, then the continuation.
    let text = stdout.lines().next().unwrap();
    assert!(text.starts_with(&want.text), "{text}");
    text[want.text.len()..].to_string()
}

#[test]
fn greedy_text_generation_matches_transformers_char_tokenizer() {
    let streamed = check_text_generation("llama", "1");
    // One printable ASCII character per token (id + 32).
    let want: String = text_prompt("llama").greedy.iter().map(|&t| char::from(32 + t as u8)).collect();
    assert_eq!(streamed, want);
    check_text_generation("llama3", "2");
}

#[test]
fn greedy_text_generation_matches_transformers_gpt2_bpe() {
    // vocab.json + merges.txt, byte-level: id 0 is a space, 95 the merge "hi".
    let streamed = check_text_generation("qwen2", "2");
    let want: String = text_prompt("qwen2")
        .greedy
        .iter()
        .map(|&t| match t {
            0 => " ".to_string(),
            95 => "hi".to_string(),
            t => char::from(32 + t as u8).to_string(),
        })
        .collect();
    assert_eq!(streamed, want);
}

#[test]
fn token_prompts_sampling_and_errors() {
    let dir = models().join("llama");
    let dir = dir.to_str().unwrap();
    // Greedy from token ids is the same as the text prompt's ids.
    let (code, stdout, _) = odc_generate(&[dir, "--prompt-tokens", "72,73,0,84,72,69,82,69,12,0,79,68,67,1", "-n", "32", "--greedy"]);
    assert_eq!(code, 0);
    assert_eq!(generated(&stdout), text_prompt("llama").greedy);
    // Sampling: the same seed gives the same tokens, within the vocabulary.
    let sample = |seed: &str| {
        let (code, stdout, stderr) = odc_generate(&[dir, "--prompt-tokens", "5,6,7", "-n", "24", "--temperature", "1.5", "--top-k", "0", "--top-p", "0.9", "--seed", seed, "--ignore-eos"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains(&format!("seed {seed}")), "{stderr}");
        generated(&stdout)
    };
    let a = sample("7");
    assert_eq!(a.len(), 24);
    assert!(a.iter().all(|&t| (0..96).contains(&t)));
    assert_eq!(a, sample("7"));
    // The prompt and the new tokens must fit the context, checked before anything runs.
    let (code, _, stderr) = odc_generate(&[dir, "--prompt-tokens", "1,2,3,4,5,6", "-n", "4", "--context", "8"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("a prompt of 6 tokens and 4 new ones need 9 positions, more than the context of 8"), "{stderr}");
    let (code, _, stderr) = odc_generate(&[dir, "--prompt-tokens", "1,2,300"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("token id 300 is outside the vocabulary of 96 tokens"), "{stderr}");
    let (code, _, stderr) = odc_generate(&[dir, "--prompt-tokens", "1", "--temperature", "-1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--temperature must be a positive number, got -1"), "{stderr}");
    let bert = models().join("bert");
    let (code, _, stderr) = odc_generate(&[bert.to_str().unwrap(), "--prompt-tokens", "1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("a BERT encoder has no KV cache"), "{stderr}");
    let (code, _, stderr) = odc_generate(&[dir, "--prompt", "hi"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_compiled_decoder_module_generates_the_same_tokens() {
    let want = text_prompt("qwen2");
    let out = std::env::temp_dir().join(format!("odc-generate-aot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let dir = models().join("qwen2");
    let compile = Command::new(env!("CARGO_BIN_EXE_odc"))
        .args(["compile", dir.to_str().unwrap(), "--emit", "sharedlib", "--context", "64", "--max-prefill", "4", "-o"])
        .arg(format!("{}/", out.display()))
        .output()
        .unwrap();
    assert!(compile.status.success(), "{}", String::from_utf8_lossy(&compile.stderr));
    // The tokenizer (vocab.json + merges.txt) was copied beside the module.
    let so = out.join("libqwen2.so");
    for threads in ["1", "2"] {
        let (code, stdout, stderr) = odc_generate(&[so.to_str().unwrap(), "--prompt", &want.text, "-n", "32", "--threads", threads]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(generated(&stdout), want.greedy, "module at {threads} thread(s)");
        assert!(stderr.contains("context 64, prefill steps of 4 tokens"), "{stderr}");
    }
    let (code, _, stderr) = odc_generate(&[so.to_str().unwrap(), "--prompt-tokens", "1", "--context", "32"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--context, --max-prefill and --min-window are fixed when a module is compiled"), "{stderr}");
    let (code, _, stderr) = odc_generate(&[so.to_str().unwrap(), "--prompt-tokens", "1,2,3", "-n", "70"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("need 72 positions, more than the context of 64"), "{stderr}");
    // `odc exec` lists the steps of a stateful module.
    let exec = Command::new(env!("CARGO_BIN_EXE_odc")).args(["exec", so.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8(exec.stdout).unwrap();
    assert!(text.contains("step prefill: inputs input_ids [1, 4], position [1], n_tokens [1]; outputs logits [1, 96]"), "{text}");
    assert!(text.contains("step decode: inputs input_ids [1, 1], position [1]; outputs logits [1, 96]"), "{text}");
}
