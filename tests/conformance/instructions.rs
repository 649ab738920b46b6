//! `dockerfile/instructions/cases.json`: parsed nodes → typed instructions.

use kiln::frontend::ast::Node;
use kiln::frontend::flags::Flags;
use kiln::frontend::instructions::{
    check_interval, handle_json_args, parse_command, parse_device, parse_go_duration, CommandLine,
    Instruction, SourceRef,
};
use kiln::frontend::parser::parse;
use kiln::frontend::stages::parse_dockerfile;
use kiln::frontend::DockerfileError;
use serde_json::Value;

fn cases() -> Option<Value> {
    let dir = super::dir()?;
    let text = std::fs::read_to_string(dir.join("dockerfile/instructions/cases.json")).unwrap();
    Some(serde_json::from_str(&text).unwrap())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| s(x).to_string())
        .collect()
}

/// Parses a Dockerfile and converts every node, returning the first command or error.
fn convert_all(text: &str) -> Result<Vec<kiln::frontend::instructions::Command>, DockerfileError> {
    let parsed = parse("Dockerfile", text)?;
    let src = SourceRef {
        file: "Dockerfile",
        text,
    };
    parsed.nodes.iter().map(|n| parse_command(src, n)).collect()
}

fn hand_node(instruction: &str, values: &[String], json: bool) -> Node {
    Node {
        keyword: instruction.to_lowercase(),
        args: values.to_vec(),
        json,
        original: format!("{instruction} {}", values.join(" ")),
        ..Default::default()
    }
}

fn src() -> SourceRef<'static> {
    SourceRef {
        file: "Dockerfile",
        text: "",
    }
}

#[test]
fn error_tables() {
    let Some(c) = cases() else { return };
    let mut ran = 0;
    for case in c["arg_count_errors"]["cases"].as_array().unwrap() {
        let e = convert_all(s(&case["dockerfile"])).expect_err(s(&case["dockerfile"]));
        assert_eq!(
            e.message,
            s(&case["expect_error"]),
            "{}",
            case["dockerfile"]
        );
        assert!(e.pos.line >= 1 && e.pos.column >= 1);
        ran += 1;
    }
    super::report("instructions/arg_count_errors", ran, 0);
    let mut ran = 0;
    for case in c["node_level_errors"]["cases"].as_array().unwrap() {
        let node = hand_node(
            s(&case["instruction"]),
            &strings(&case["node_values"]),
            false,
        );
        let e = parse_command(src(), &node).expect_err("must fail");
        assert_eq!(e.message, s(&case["expect_error"]));
        ran += 1;
    }
    super::report("instructions/node_level_errors", ran, 0);
    let mut ran = 0;
    for case in c["error_cases"]["cases"].as_array().unwrap() {
        let e = convert_all(s(&case["dockerfile"])).expect_err(s(&case["name"]));
        assert!(
            e.message.contains(s(&case["expect_error_contains"])),
            "{}: {:?} lacks {:?}",
            case["name"],
            e.message,
            case["expect_error_contains"]
        );
        assert!(
            e.pos.line >= 1 && e.pos.column >= 1,
            "{}: {e}",
            case["name"]
        );
        ran += 1;
    }
    super::report("instructions/error_cases", ran, 0);
}

#[test]
fn heredoc_tables() {
    let Some(c) = cases() else { return };
    let mut ran = 0;
    for case in c["copy_heredoc"]["cases"].as_array().unwrap() {
        let cmds = convert_all(s(&case["dockerfile"])).unwrap();
        let Instruction::Copy(copy) = &cmds[0].instruction else {
            panic!("not a COPY")
        };
        assert_eq!(copy.src.dest, s(&case["dest"]));
        assert_eq!(copy.src.paths, strings(&case["source_paths"]));
        let want = case["source_contents"].as_array().unwrap();
        assert_eq!(
            copy.src.contents.len(),
            want.len(),
            "{}",
            case["dockerfile"]
        );
        for (got, w) in copy.src.contents.iter().zip(want) {
            assert_eq!(got.name, s(&w["path"]));
            assert_eq!(got.data, s(&w["data"]), "{}", case["dockerfile"]);
            assert_eq!(got.expand, w["expand"].as_bool().unwrap());
        }
        ran += 1;
    }
    super::report("instructions/copy_heredoc", ran, 0);
    let mut ran = 0;
    for case in c["run_heredoc"]["cases"].as_array().unwrap() {
        let cmds = convert_all(s(&case["dockerfile"])).unwrap();
        let Instruction::Run(run) = &cmds[0].instruction else {
            panic!("not a RUN")
        };
        let (shell, line) = match &run.cmd {
            CommandLine::Shell(s) => (true, vec![s.clone()]),
            CommandLine::Exec(v) => (false, v.clone()),
        };
        assert_eq!(
            shell,
            case["prepend_shell"].as_bool().unwrap(),
            "{}",
            case["dockerfile"]
        );
        assert_eq!(line, strings(&case["cmdline"]), "{}", case["dockerfile"]);
        let want = case["files"].as_array().unwrap();
        assert_eq!(run.files.len(), want.len());
        for (got, w) in run.files.iter().zip(want) {
            assert_eq!(got.name, s(&w["name"]));
            assert_eq!(got.data, s(&w["data"]));
            assert_eq!(got.chomp, w["chomp"].as_bool().unwrap());
        }
        ran += 1;
    }
    super::report("instructions/run_heredoc", ran, 0);
}

#[test]
fn healthcheck_flags_and_args_tables() {
    let Some(c) = cases() else { return };
    let mut ran = 0;
    for case in c["healthcheck_cmd"]["cases"].as_array().unwrap() {
        let node = hand_node(
            s(&case["instruction"]),
            &strings(&case["node_values"]),
            false,
        );
        let Instruction::Healthcheck(h) = parse_command(src(), &node).unwrap().instruction else {
            panic!("not a HEALTHCHECK")
        };
        assert_eq!(h.test, Some(strings(&case["expect_test"])));
        ran += 1;
    }
    super::report("instructions/healthcheck_cmd", ran, 0);
    let mut ran = 0;
    for case in c["healthcheck_interval"]["cases"].as_array().unwrap() {
        let r = parse_go_duration(s(&case["value"])).and_then(|d| check_interval("interval", d));
        match case.get("expect_error_contains") {
            Some(want) => assert!(r.unwrap_err().contains(s(want))),
            None => r.unwrap(),
        }
        ran += 1;
    }
    super::report("instructions/healthcheck_interval", ran, 0);
    let mut ran = 0;
    for case in c["run_flags_used"]["cases"].as_array().unwrap() {
        let cmds = convert_all(s(&case["dockerfile"])).unwrap();
        let Instruction::Run(run) = &cmds[0].instruction else {
            panic!("not a RUN")
        };
        assert_eq!(run.flags_used, strings(&case["flags_used"]));
        ran += 1;
    }
    super::report("instructions/run_flags_used", ran, 0);
    let mut ran = 0;
    for case in c["builder_flags"]["cases"].as_array().unwrap() {
        let mut flags = Flags::new();
        for d in case["declared"].as_array().unwrap() {
            flags = match s(&d["type"]) {
                "bool" => flags.bool(s(&d["name"]), d["default"].as_bool().unwrap()),
                "string" => flags.string(s(&d["name"]), s(&d["default"])),
                other => panic!("unknown flag type {other}"),
            };
        }
        let r = flags.parse(&strings(&case["args"]));
        if case["expect_error"].as_bool() == Some(true) {
            assert!(r.is_err(), "{case}");
        } else {
            let f = r.unwrap_or_else(|e| panic!("{case}: {e}"));
            if let Some(values) = case["expect_values"].as_object() {
                for (k, v) in values {
                    match v {
                        Value::Bool(b) => assert_eq!(f.get_bool(k), *b, "{case}"),
                        Value::String(t) => assert_eq!(&f.get_string(k), t, "{case}"),
                        _ => panic!("bad value"),
                    }
                }
            }
            if let Some(used) = case.get("expect_used") {
                assert_eq!(f.used(), strings(used).as_slice(), "{case}");
            }
        }
        ran += 1;
    }
    super::report("instructions/builder_flags", ran, 0);
    let mut ran = 0;
    for case in c["json_args_join"]["cases"].as_array().unwrap() {
        let got = handle_json_args(&strings(&case["args"]), case["json"].as_bool().unwrap());
        assert_eq!(got, strings(&case["expect"]));
        ran += 1;
    }
    super::report("instructions/json_args_join", ran, 0);
    let mut ran = 0;
    for case in c["run_device"]["cases"].as_array().unwrap() {
        let r = parse_device(s(&case["input"]));
        match case.get("expect_error") {
            Some(e) => assert_eq!(r.unwrap_err(), s(e)),
            None => {
                let d = r.unwrap();
                assert_eq!(d.name, s(&case["name"]));
                assert_eq!(d.required, case["required"].as_bool().unwrap());
            }
        }
        ran += 1;
    }
    super::report("instructions/run_device", ran, 0);
}

#[test]
fn doc_comments() {
    let Some(c) = cases() else { return };
    let d = &c["doc_comments"];
    let df = parse_dockerfile("Dockerfile", s(&d["dockerfile"])).unwrap();
    let e = &d["expect"];
    assert_eq!(df.stages[0].doc_comment, s(&e["stage[0].doc_comment"]));
    assert_eq!(df.global_args[0].key, s(&e["global_args[0]"]["key"]));
    assert_eq!(
        df.global_args[0].doc_comment,
        s(&e["global_args[0]"]["doc_comment"])
    );
    let mut ran = 2;
    for (i, key) in ["stage[0].commands[0].args", "stage[0].commands[1].args"]
        .iter()
        .enumerate()
    {
        let Instruction::Arg(args) = &df.stages[0].commands[i].instruction else {
            panic!("not an ARG")
        };
        let want = e[*key].as_array().unwrap();
        assert_eq!(args.len(), want.len());
        for (a, w) in args.iter().zip(want) {
            assert_eq!(a.key, s(&w["key"]));
            assert_eq!(a.doc_comment, s(&w["doc_comment"]), "{key}");
            ran += 1;
        }
    }
    super::report("instructions/doc_comments", ran, 0);
}
