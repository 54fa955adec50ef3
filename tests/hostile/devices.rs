//! Device nodes a step makes with mknod cannot be opened (device cgroup
//! rules as Docker's, and `nodev`); the allowed `/dev` nodes work.

use std::fs;

use super::common::{Builder, Mode};

#[test]
fn mknod_nodes_cannot_be_opened_but_dev_null_works() {
    // Rootless steps cannot mknod at all (the user namespace refuses it).
    let Some(b) = Builder::new(Mode::Root) else {
        return;
    };
    let dest = b.context.join("../out");
    let output = format!("type=local,dest={}", dest.display());
    let run = b.build(
        "FROM busybox\n\
         RUN mknod /tmp/kmsg c 1 11 && mknod /tmp/mem c 1 1 && mknod /tmp/loop b 7 0 \
             && mknod /dev/shm/kmsg c 1 11 \
             && for n in /tmp/kmsg /tmp/mem /tmp/loop /dev/shm/kmsg; do \
                  (timeout 2 head -c 1 $n >/dev/null 2>&1 && echo opened || echo refused) >> /devices.out; done \
             && echo x > /dev/null && head -c 4 /dev/zero | wc -c > /zero.out \
             && head -c 4 /dev/urandom | wc -c >> /zero.out\n",
        &["-o", &output],
    );
    run.assert_ok();
    assert_eq!(
        fs::read_to_string(dest.join("devices.out")).unwrap(),
        "refused\nrefused\nrefused\nrefused\n"
    );
    assert_eq!(fs::read_to_string(dest.join("zero.out")).unwrap(), "4\n4\n");
    b.assert_host_untouched(&run);
}
