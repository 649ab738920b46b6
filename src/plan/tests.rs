use super::*;
use crate::frontend::stages::parse_dockerfile;

fn plan_of(text: &str, target: Option<&str>, args: &[(&str, &str)]) -> Result<Plan, PlanError> {
    let df = parse_dockerfile("Dockerfile", text)?;
    let opts = PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        target_platform: Platform::parse("linux/arm64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
    };
    plan(&df, &opts, &NoBaseEnv)
}

fn texts(p: &Plan, stage: usize) -> Vec<String> {
    p.stages[stage]
        .steps
        .iter()
        .map(|s| s.text.clone())
        .collect()
}

const MULTI: &str = "\
ARG GO=1.22
FROM golang:${GO} AS builder
RUN go build -o /out/app
FROM builder AS test
RUN go test ./...
FROM busybox AS unused
FROM scratch AS app
COPY --from=builder /out/app /app
";

#[test]
fn target_prunes_and_orders() {
    let p = plan_of(MULTI, Some("app"), &[]).unwrap();
    let order: Vec<usize> = p.stages.iter().map(|s| s.index).collect();
    assert_eq!(order, vec![0, 3]);
    assert_eq!(p.stages[0].base, Base::Image("golang:1.22".into()));
    assert_eq!(p.stages[1].base, Base::Scratch);
    assert_eq!(p.stages[1].sources, vec![Source::Stage(0)]);
    let skipped: Vec<usize> = p.skipped.iter().map(|s| s.index).collect();
    assert_eq!(skipped, vec![1, 2]);

    let p = plan_of(MULTI, Some("TEST"), &[("GO", "1.23")]).unwrap();
    let order: Vec<usize> = p.stages.iter().map(|s| s.index).collect();
    assert_eq!(order, vec![0, 1]);
    assert_eq!(p.stages[0].base, Base::Image("golang:1.23".into()));
    assert_eq!(p.stages[1].base, Base::Stage(0));
}

#[test]
fn unknown_target_is_an_error() {
    let e = plan_of(MULTI, Some("nope"), &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("target stage \"nope\" could not be found"),
        "{e}"
    );
}

#[test]
fn global_args_need_redeclaring_inside_a_stage() {
    let text = "ARG V=1\nFROM busybox\nRUN echo $V\nENV A=$V\nARG V\nENV B=$V\n";
    let p = plan_of(text, None, &[]).unwrap();
    assert_eq!(
        texts(&p, 0),
        vec!["RUN echo $V", "ENV A=\"\"", "ARG V=1", "ENV B=1"]
    );
    assert_eq!(p.stages[0].steps[1].undefined, vec!["V".to_string()]);
    let p = plan_of(text, None, &[("V", "9")]).unwrap();
    assert_eq!(texts(&p, 0)[3], "ENV B=9");
}

#[test]
fn build_args_override_defaults_and_env_wins_when_later() {
    let text = "FROM busybox\nARG A=def\nENV X=$A\nENV A=env\nLABEL l=$A\n";
    let p = plan_of(text, None, &[("A", "cli")]).unwrap();
    assert_eq!(
        texts(&p, 0),
        vec!["ARG A=cli", "ENV X=cli", "ENV A=env", "LABEL l=env"]
    );
    assert_eq!(
        p.stages[0].env,
        vec![("X".into(), "cli".into()), ("A".into(), "env".into())]
    );
    assert_eq!(
        p.stages[0].steps[0].build_args,
        vec![("A".to_string(), "cli".to_string())]
    );
}

#[test]
fn platform_args_exist_globally_and_when_declared() {
    let text = "FROM --platform=$BUILDPLATFORM busybox:$TARGETARCH\nARG TARGETPLATFORM\nARG TARGETVARIANT\nRUN echo\nENV P=$TARGETPLATFORM V=${TARGETVARIANT:-none} O=$TARGETOS\n";
    let p = plan_of(text, None, &[]).unwrap();
    assert_eq!(p.stages[0].platform.to_string(), "linux/amd64");
    assert_eq!(p.stages[0].base, Base::Image("busybox:arm64".into()));
    assert_eq!(texts(&p, 0)[3], "ENV P=linux/arm64 V=none O=\"\"");
}

#[test]
fn env_in_one_instruction_sees_values_from_before() {
    let text = "FROM busybox\nENV A=1\nENV A=2 B=$A\n";
    let p = plan_of(text, None, &[]).unwrap();
    assert_eq!(texts(&p, 0)[1], "ENV A=2 B=1");
}

#[test]
fn stages_inherit_env_and_args_from_their_base_stage() {
    let text = "FROM busybox AS a\nENV P=/opt\nARG Q=1\nFROM a\nWORKDIR $P/$Q\n";
    let p = plan_of(text, None, &[]).unwrap();
    assert_eq!(texts(&p, 1), vec!["WORKDIR /opt/1"]);
}

#[test]
fn copy_from_index_image_and_errors() {
    let text = "FROM busybox\nFROM scratch\nCOPY --from=0 /a /a\nCOPY --from=alpine:3 /b /b\n";
    let p = plan_of(text, None, &[]).unwrap();
    assert_eq!(p.stages.len(), 2);
    assert_eq!(
        p.stages[1].sources,
        vec![Source::Stage(0), Source::Image("alpine:3".into())]
    );
    let e = plan_of("FROM busybox\nCOPY --from=0 /a /a\n", None, &[]).unwrap_err();
    assert!(e.to_string().contains("invalid stage index 0"), "{e}");
    let e = plan_of("FROM busybox AS a\nCOPY --from=a /a /a\n", None, &[]).unwrap_err();
    assert!(
        e.to_string().contains("cannot copy from stage \"a\""),
        "{e}"
    );
    assert!(e.to_string().starts_with("Dockerfile:2:13:"), "{e}");
}

#[test]
fn mount_from_is_an_edge_and_is_expanded() {
    let text = "FROM busybox AS deps\nFROM busybox\nARG D=deps\nRUN --mount=from=$D,target=/d,type=bind ls /d\n";
    let p = plan_of(text, None, &[]).unwrap();
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(
        texts(&p, 1)[1],
        "RUN --mount=type=bind,from=deps,target=/d ls /d"
    );
}

#[test]
fn only_earlier_stages_are_bases_or_sources() {
    // A later stage's name in FROM is an image name, as in BuildKit.
    let p = plan_of(
        "FROM b AS a\nRUN x\nFROM busybox AS b\nCOPY --from=a x y\n",
        None,
        &[],
    )
    .unwrap();
    assert_eq!(p.stages[0].base, Base::Image("b".into()));
    let e = plan_of(
        "FROM alpine\nCOPY --from=b x y\nFROM busybox AS b\nFROM alpine\nCOPY --from=0 a b\n",
        None,
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("cannot copy from stage \"b\""),
        "{e}"
    );
}

#[test]
fn copy_from_is_not_expanded() {
    let e = plan_of(
        "FROM alpine AS a\nFROM busybox\nARG S=a\nCOPY --from=$S x y\n",
        None,
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("variable expansion is not supported for --from"),
        "{e}"
    );
}

#[test]
fn child_stages_inherit_args_platform_and_onbuild_triggers() {
    let p = plan_of(
        "FROM alpine AS a\nARG V=1\nFROM a\nWORKDIR /$V\n",
        None,
        &[],
    )
    .unwrap();
    assert_eq!(texts(&p, 1), vec!["WORKDIR /1"]);
    let p = plan_of(
        "FROM --platform=linux/s390x alpine AS a\nFROM a\n",
        None,
        &[],
    )
    .unwrap();
    assert_eq!(p.stages[1].platform.to_string(), "linux/s390x");
    let text =
        "FROM alpine AS a\nONBUILD COPY --from=c x y\nFROM busybox AS c\nFROM a\nRUN echo child\n";
    // The trigger runs in the child, where c (defined after a) is earlier: allowed.
    assert!(plan_of(text, None, &[]).is_ok());
    let text =
        "FROM busybox AS c\nFROM alpine AS a\nONBUILD COPY --from=c x y\nFROM a\nRUN echo child\n";
    let p = plan_of(text, None, &[]).unwrap();
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![1, 0, 2]
    );
    assert_eq!(texts(&p, 2), vec!["COPY --from=c x y", "RUN echo child"]);
    assert_eq!(p.stages[2].sources, vec![Source::Stage(0)]);
}

#[test]
fn values_are_checked_after_expansion() {
    for (text, want) in [
        ("FROM a\nENV M=999\nCOPY --chmod=$M a b\n", "invalid chmod"),
        (
            "FROM a\nENV C=abc\nADD --checksum=sha256:$C http://x/y /z\n",
            "invalid checksum",
        ),
        ("FROM a\nVOLUME [\"/a\", \"$B\"]\n", "empty string"),
        ("FROM a\nEXPOSE 80/xyz\n", "invalid port"),
        ("FROM a\nEXPOSE abc\n", "invalid port"),
        ("FROM a\nSTOPSIGNAL FOO\n", "invalid signal"),
    ] {
        let e = plan_of(text, None, &[]).unwrap_err();
        assert!(e.to_string().contains(want), "{text:?}: {e}");
    }
    let p = plan_of("FROM a\nENV P=8080\nEXPOSE $P 53/udp 1000-1010/tcp\nSTOPSIGNAL sigkill\nLABEL \"a b\"=\"c d\"\n", None, &[]).unwrap();
    assert_eq!(texts(&p, 0)[1], "EXPOSE 8080 53/udp 1000-1010/tcp");
    assert_eq!(texts(&p, 0)[3], "LABEL \"a b\"=\"c d\"");
}

#[test]
fn a_stage_named_like_its_image_uses_the_image() {
    let p = plan_of("FROM busybox AS busybox\nRUN true\n", None, &[]).unwrap();
    assert_eq!(p.stages[0].base, Base::Image("busybox".into()));
}

#[test]
fn unused_build_args_are_reported_but_predefined_ones_are_not() {
    let p = plan_of(
        "FROM busybox\nARG USED\n",
        None,
        &[("USED", "1"), ("NOPE", "2"), ("HTTP_PROXY", "x")],
    )
    .unwrap();
    assert_eq!(p.unused_build_args, vec!["NOPE".to_string()]);
    assert_eq!(
        p.proxy_env,
        vec![("HTTP_PROXY".to_string(), "x".to_string())]
    );
}

#[test]
fn expansion_errors_are_located() {
    let e = plan_of("FROM busybox\nENV A=${B:?needs B}\n", None, &[]).unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with("Dockerfile:2:"), "{s}");
    assert!(s.contains("needs B"), "{s}");
    let e = plan_of("FROM busybox\nWORKDIR ${\n", None, &[]).unwrap_err();
    assert!(e.to_string().starts_with("Dockerfile:2:9:"), "{e}");
}

#[test]
fn unreachable_stage_errors_do_not_fail_the_build() {
    let text = "FROM busybox AS broken\nENV A=${X:?unset}\nFROM busybox\nRUN true\n";
    assert!(plan_of(text, None, &[]).is_ok());
    assert!(plan_of(text, Some("broken"), &[]).is_err());
}
