//! Heredocs in RUN, COPY and ADD, executed as BuildKit does.

use std::fs;

use super::common::{mode, owner, Env};

#[test]
fn heredocs_run_through_the_shell_and_create_files() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox\n\
         ARG NAME=world\n\
         RUN <<EOF\n\
         set -e\n\
         echo \"hi $NAME\" > /greet\n\
         mkdir /made\n\
         EOF\n\
         RUN <<EOF\n\
         #!/bin/sh\n\
         echo \"from script $0\" > /script-out\n\
         EOF\n\
         RUN cat <<EOF > /viacat\n\
         line $NAME\n\
         EOF\n\
         RUN <<-EOF sh\n\
         \techo tabs-stripped > /tabbed\n\
         \tEOF\n\
         COPY <<EOF /etc/app.conf\n\
         name=$NAME\n\
         EOF\n\
         COPY <<'EOF' /etc/raw.conf\n\
         name=$NAME\n\
         EOF\n\
         COPY --chmod=755 --chown=1000:1000 <<-EOF /usr/local/bin/tool\n\
         \t#!/bin/sh\n\
         \techo tool\n\
         \tEOF\n\
         ADD <<EOF /added.txt\n\
         added\n\
         EOF\n\
         COPY <<one <<two /multi/\n\
         first\n\
         one\n\
         second\n\
         two\n",
    );
    let (_, root) = env.build_fs("heredoc:1", &[]);
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("greet"), "hi world\n");
    assert!(root.join("made").is_dir());
    assert_eq!(
        read("script-out"),
        "from script /dev/pipes/EOF\n",
        "a shebang heredoc runs as a script file"
    );
    assert_eq!(read("viacat"), "line world\n");
    assert_eq!(read("tabbed"), "tabs-stripped\n");
    assert_eq!(read("etc/app.conf"), "name=world\n", "unquoted: expanded");
    assert_eq!(read("etc/raw.conf"), "name=$NAME\n", "quoted: literal");
    assert_eq!(read("usr/local/bin/tool"), "#!/bin/sh\necho tool\n");
    assert_eq!(mode(&root.join("usr/local/bin/tool")), 0o755);
    assert_eq!(owner(&root.join("usr/local/bin/tool")), (1000, 1000));
    assert_eq!(mode(&root.join("etc/app.conf")), 0o644);
    assert_eq!(read("added.txt"), "added\n");
    assert_eq!(read("multi/one"), "first\n");
    assert_eq!(read("multi/two"), "second\n");
    assert!(
        !root.join("dev/pipes").exists(),
        "the script mount stays out of the image"
    );
}
