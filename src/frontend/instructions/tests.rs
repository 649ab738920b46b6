use super::*;
use crate::frontend::parser::parse;

fn first(text: &str) -> Result<Command, DockerfileError> {
    let parsed = parse("Dockerfile", text)?;
    let src = SourceRef {
        file: "Dockerfile",
        text,
    };
    parse_command(src, &parsed.nodes[0])
}

fn err(text: &str) -> DockerfileError {
    match first(text) {
        Ok(c) => panic!("{text:?} should fail, got {:?}", c.instruction),
        Err(e) => e,
    }
}

#[test]
fn every_instruction_parses() {
    let ok = [
        "FROM --platform=linux/arm64 busybox AS build",
        "RUN --mount=type=cache,target=/c --network=none --security=sandbox echo hi",
        "RUN --device=vendor.com/gpu=all,required echo hi",
        "CMD [\"a\"]",
        "ENTRYPOINT exec me",
        "SHELL [\"/bin/bash\", \"-c\"]",
        "LABEL a=b c=\"d e\"",
        "ENV A=1",
        "MAINTAINER me",
        "EXPOSE 80/tcp 53/udp",
        "ADD --chown=1:1 --chmod=644 --link --keep-git-dir --checksum=sha256:0123456789012345678901234567890123456789012345678901234567890123 --unpack=false --exclude=*.md a /b/",
        "COPY --from=build --chown=app --chmod=u+x,go=rX --link --parents --exclude=x a b /c/",
        "VOLUME /a /b",
        "USER app:app",
        "WORKDIR /src",
        "ARG A B=2",
        "ONBUILD RUN make",
        "STOPSIGNAL SIGKILL",
        "HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --start-interval=1s --retries=2 CMD true",
    ];
    for t in ok {
        first(t).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
}

#[test]
fn unknown_and_bad_flags_are_located() {
    let text = "COPY --chmown=1 a b\n";
    let e = err(text);
    assert_eq!(e.message, "unknown flag: --chmown");
    assert_eq!((e.pos.line, e.pos.column), (1, 6));
    let e = err("RUN --network=bridge true");
    assert!(
        e.message.contains("unsupported network mode"),
        "{}",
        e.message
    );
    let e = err("RUN --mount=type=nfs,target=/x true");
    assert!(
        e.message.contains("unsupported mount type"),
        "{}",
        e.message
    );
    assert_eq!(e.pos.column, 13);
    let e = err("COPY --link=maybe a b");
    assert!(e.message.contains("expecting boolean"), "{}", e.message);
    let e = err("COPY --from a b");
    assert!(e.message.contains("missing a value"), "{}", e.message);
    let e = err("COPY --chmod=9z a b");
    assert!(e.message.contains("invalid chmod"), "{}", e.message);
    let e = err("ADD --checksum=md5:abc http://x/y /z");
    assert!(e.message.contains("invalid checksum"), "{}", e.message);
    let e = err("HEALTHCHECK --interval=50ns CMD true");
    assert!(
        e.message.contains("cannot be less than 1ms"),
        "{}",
        e.message
    );
    let e = err("HEALTHCHECK --retries=-1 CMD true");
    assert!(e.message.contains("cannot be negative"), "{}", e.message);
    let e = err("HEALTHCHECK NONE x");
    assert_eq!(e.message, "HEALTHCHECK NONE takes no arguments");
    let e = err("HEALTHCHECK BOGUS x");
    assert!(e.message.contains("Unknown type"), "{}", e.message);
    let e = err("FROM a b");
    assert!(
        e.message.contains("one or three arguments"),
        "{}",
        e.message
    );
    let e = err("FROM a AS 1x");
    assert!(
        e.message.contains("invalid name for build stage"),
        "{}",
        e.message
    );
    let e = err("SHELL /bin/sh -c");
    assert!(e.message.contains("JSON form"), "{}", e.message);
    let e = err("VOLUME [\"\"]");
    assert!(e.message.contains("empty string"), "{}", e.message);
}

#[test]
fn forms_and_values() {
    let c = first("CMD echo  hi").unwrap();
    assert_eq!(
        c.instruction,
        Instruction::Cmd(CommandLine::Shell("echo  hi".into()))
    );
    let c = first("CMD []").unwrap();
    assert_eq!(c.instruction, Instruction::Cmd(CommandLine::Exec(vec![])));
    let Instruction::Healthcheck(h) = first("HEALTHCHECK --interval=1m30s CMD curl -f x")
        .unwrap()
        .instruction
    else {
        panic!()
    };
    assert_eq!(h.test, Some(vec!["CMD-SHELL".into(), "curl -f x".into()]));
    assert_eq!(h.interval_ns, 90_000_000_000);
    let Instruction::Healthcheck(h) = first("HEALTHCHECK CMD [\"a\", \"b\"]").unwrap().instruction
    else {
        panic!()
    };
    assert_eq!(h.test, Some(vec!["CMD".into(), "a".into(), "b".into()]));
    let Instruction::Onbuild { expression, inner } =
        first("ONBUILD  COPY --from=x a /b").unwrap().instruction
    else {
        panic!()
    };
    assert_eq!(expression, "COPY --from=x a /b");
    assert!(matches!(inner.instruction, Instruction::Copy(_)));
    let Instruction::Arg(a) = first("ARG A B=\"x y\"").unwrap().instruction else {
        panic!()
    };
    assert_eq!(a[0].value, None);
    assert_eq!(a[1].value.as_deref(), Some("\"x y\""));
    let Instruction::Run(r) = first("RUN <<EOF\necho hi\nEOF\n").unwrap().instruction else {
        panic!()
    };
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].data, "echo hi\n");
}

#[test]
fn devices_parse_like_buildkit() {
    assert_eq!(
        parse_device("vendor1.com/device=foo,required").unwrap(),
        Device {
            name: "vendor1.com/device=foo".into(),
            required: true
        }
    );
    assert_eq!(
        parse_device("vendor1.com/device=foo,name=vendor2.com/device=bar").unwrap_err(),
        "device name already set to vendor1.com/device=foo"
    );
}

#[test]
fn chmod_forms() {
    for ok in ["755", "0644", "+x", "u=rwX,go=rX", "g=u", "a-w", "u+s"] {
        assert!(valid_chmod(ok), "{ok}");
    }
    for bad in ["", "999", "12345", "u", "x+", "u=q", "u+x,"] {
        assert!(!valid_chmod(bad), "{bad}");
    }
}
