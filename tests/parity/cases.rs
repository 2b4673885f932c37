//! The cases of the differential tier: command lines a user types, each run through docker and
//! mvm. `{w}` in a line is the case's scratch directory (one per engine, holding the case's
//! files). Cases run one after another, each after a clean-up of both engines.

use crate::compare::Check;

/// What a case expects of mvm against Docker.
pub enum Expect {
    /// The same behaviour.
    Same,
    /// A known difference still to close: what is left.
    #[allow(
        dead_code,
        reason = "every known gap is closed; the next one found is marked so"
    )]
    Gap(&'static str),
    /// mvm differs on purpose: why, and what mvm says instead (in its stderr).
    Deliberate {
        why: &'static str,
        says: &'static str,
    },
}

pub struct Step {
    pub line: String,
    pub check: Check,
    pub stdin: Option<&'static str>,
    pub tty: bool,
    /// Words both CLIs' error lines must contain.
    pub meaning: Vec<&'static str>,
}

impl Step {
    pub fn new(line: &str, check: Check) -> Step {
        Step {
            line: line.to_string(),
            check,
            stdin: None,
            tty: false,
            meaning: Vec::new(),
        }
    }
}

pub struct Case {
    pub name: &'static str,
    pub expect: Expect,
    pub steps: Vec<Step>,
    pub files: Vec<(&'static str, &'static str)>,
}

fn case(name: &'static str, expect: Expect) -> Case {
    Case {
        name,
        expect,
        steps: Vec::new(),
        files: Vec::new(),
    }
}

#[allow(
    dead_code,
    reason = "every known gap is closed; the next one found is marked so"
)]
fn gap(what: &'static str) -> Expect {
    Expect::Gap(what)
}

const SAME: Expect = Expect::Same;

impl Case {
    fn step(mut self, line: &str, check: Check) -> Case {
        self.steps.push(Step::new(line, check));
        self
    }
    fn setup(self, line: &str) -> Case {
        self.step(line, Check::Setup)
    }
    fn same(self, line: &str) -> Case {
        self.step(line, Check::Same)
    }
    fn rc(self, line: &str) -> Case {
        self.step(line, Check::Rc)
    }
    fn keys(self, line: &str) -> Case {
        self.step(line, Check::Keys)
    }
    fn exit(self, line: &str) -> Case {
        self.step(line, Check::Exit)
    }
    fn lines(self, line: &str) -> Case {
        self.step(line, Check::Lines)
    }
    fn last(&mut self) -> &mut Step {
        self.steps.last_mut().expect("a step before its modifier")
    }
    /// The last step reads `text` on its stdin.
    fn stdin(mut self, text: &'static str) -> Case {
        self.last().stdin = Some(text);
        self
    }
    /// The last step runs on a terminal.
    fn tty(mut self) -> Case {
        self.last().tty = true;
        self
    }
    /// Both error lines of the last step must contain these words.
    fn means(mut self, words: &[&'static str]) -> Case {
        self.last().meaning.extend_from_slice(words);
        self
    }
    fn file(mut self, name: &'static str, content: &'static str) -> Case {
        self.files.push((name, content));
        self
    }
}

/// Splits a command line into words as a shell would for these cases: spaces separate,
/// '...' and "..." quote, a backslash outside quotes escapes the next character.
pub fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn splitting_quotes_as_a_shell() {
    assert_eq!(
        split(r#"run --rm busybox sh -c 'echo "a b"; exit 3' "" x\ y"#),
        [
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo \"a b\"; exit 3",
            "",
            "x y"
        ]
    );
}

/// A running container `c1` (sleeping).
const SLEEPER: &str = "run -d --name c1 busybox sleep 600";

pub fn all() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(run());
    v.extend(lifecycle());
    v.extend(exec());
    v.extend(logs_and_cp());
    v.extend(inspect_and_formats());
    v.extend(ps_and_images());
    v.extend(build());
    v.extend(networks_and_volumes());
    v.extend(system());
    v
}

fn run() -> Vec<Case> {
    vec![
        case("run: output and exit code", SAME)
            .same("run --rm busybox sh -c 'echo out; echo err >&2; exit 3'"),
        case("run: environment", SAME)
            .same("run --rm -e A=1 --env B=two busybox sh -c 'echo $A $B; echo $PATH'"),
        case("run: --env-file", SAME)
            .file("env.list", "# comment\nA=1\nB=with space\n")
            .same("run --rm --env-file {w}/env.list busybox sh -c 'echo $A; echo $B'"),
        case("run: workdir", SAME).same("run --rm -w /work/dir busybox pwd"),
        case("run: relative workdir refused", SAME)
            .rc("run --rm -w rel busybox pwd")
            .means(&["absolute"]),
        case("run: root's groups", SAME).same("run --rm busybox id"),
        case("run: -u uid:gid gets supplementary groups", SAME)
            .same("run --rm -u 1000:1000 busybox id"),
        case("run: -u name", SAME).same("run --rm -u nobody busybox id"),
        case("run: unknown user", SAME).rc("run --rm -u nosuchuser busybox id"),
        case("run: -it without a terminal", SAME)
            .rc("run --rm -it busybox cat")
            .stdin("hi\n")
            .means(&["not a tty"]),
        case("run: -i reads stdin", SAME)
            .same("run --rm -i busybox cat")
            .stdin("piped\n"),
        case("run: -t on a terminal", SAME)
            .same("run --rm -t busybox sh -c 'test -t 1 && echo tty'")
            .tty(),
        case("run: --entrypoint", SAME).same("run --rm --entrypoint echo busybox a b"),
        case("run: command not found", SAME).rc("run --rm busybox nosuchcmd"),
        case("run: not executable", SAME).rc("run --rm busybox /etc/passwd"),
        case("run: image not found", SAME)
            .rc("run --rm 127.0.0.1:1/nosuch:1 true")
            .means(&["127.0.0.1:1"]),
        case("run: name in use", SAME)
            .setup("create --name c1 busybox true")
            .rc("run --name c1 busybox true")
            .means(&["already in use"]),
        case("run: a one-character name is refused", SAME)
            .rc("create --name p busybox true")
            .means(&["invalid container name"]),
        case("run: bad restart policy", SAME).rc("run --rm --restart bogus busybox true"),
        case("run: --hostname", SAME).same("run --rm -h myhost busybox hostname"),
        case("run: the hostname is the short ID", SAME)
            .same("run --rm busybox sh -c 'hostname | wc -c'"),
        case("run: /etc/hosts names the container", SAME)
            .same("run --rm -h myhost busybox sh -c 'grep -c myhost /etc/hosts'"),
        case("run: /etc/hosts as Docker writes it", SAME).same("run --rm busybox cat /etc/hosts"),
        case("run: --add-host", SAME)
            .same("run --rm --add-host h1:10.1.2.3 busybox sh -c 'grep h1 /etc/hosts'"),
        case("run: --dns and --dns-search", SAME)
            .same("run --rm --dns 10.0.0.53 --dns-search example.org busybox cat /etc/resolv.conf"),
        case("run: /tmp keeps the image's files", SAME)
            .file("Dockerfile", "FROM busybox\nRUN echo y > /tmp/y\n")
            .setup("build -q -t withtmp {w}")
            .same("run --rm withtmp cat /tmp/y"),
        case("run: /tmp is the container's disk", SAME)
            .same("run --rm busybox sh -c 'grep -c \" /tmp \" /proc/mounts'"),
        case("run: --read-only", SAME).same("run --rm --read-only busybox touch /x"),
        case("run: --read-only keeps volumes writable", SAME)
            .same("run --rm --read-only -v rov:/data busybox touch /data/x"),
        case("run: --tmpfs", SAME)
            .same("run --rm --tmpfs /scratch busybox sh -c 'touch /scratch/x && echo ok'"),
        case("run: --init", SAME)
            .same("run --rm --init busybox cat /proc/1/comm")
            .same("run --rm --init busybox sh -c 'sleep 100 & kill -9 $$'")
            .same("run --rm --init busybox sh -c 'exit 3'")
            .same("run --rm --init busybox sh -c 'ps -o pid,comm | tail -n +2 | head -1'"),
        case("run: --init forwards stop's signal", SAME)
            .setup("run -d --init --name c1 busybox sh -c 'trap \"exit 7\" TERM; while :; do sleep 0.1; done'")
            .same("stop -t 20 c1")
            .same("inspect -f '{{.State.ExitCode}} {{.HostConfig.Init}}' c1"),
        case("run: PID 1 ignores SIGKILL from inside", SAME)
            .same("run --rm busybox sh -c 'kill -9 $$; echo alive'"),
        case("run: default capabilities", SAME).same("run --rm busybox grep Cap /proc/self/status"),
        case("run: --cap-drop and --cap-add", SAME).same(
            "run --rm --cap-drop NET_RAW --cap-add SYS_ADMIN busybox grep CapBnd /proc/self/status",
        ),
        case("run: --cap-add bogus", SAME).rc("run --rm --cap-add BOGUS busybox true"),
        case(
            "run: --privileged",
            Expect::Deliberate {
                why: "the VM's kernel is the container's own: every capability is given even \
                      where runc cannot give them on this host (\"unable to apply caps\")",
                says: "CapEff:\t000001ffffffffff",
            },
        )
        .same("run --rm --privileged busybox grep CapEff /proc/self/status"),
        case("run: --ulimit", SAME)
            .same("run --rm --ulimit nofile=1024:2048 busybox sh -c 'ulimit -n; ulimit -Hn'"),
        case("run: bad --ulimit", SAME).rc("run --rm --ulimit nofile=x busybox true"),
        case("run: --shm-size", SAME).same("run --rm --shm-size 8m busybox df -k /dev/shm"),
        case("run: --sysctl", SAME).same(
            "run --rm --sysctl net.ipv4.ip_forward=1 busybox cat /proc/sys/net/ipv4/ip_forward",
        ),
        case("run: labels", SAME)
            .file("labels", "c=d\n")
            .setup("create --name c1 -l a=b --label-file {w}/labels busybox true")
            .same("inspect -f '{{json .Config.Labels}}' c1"),
        case("run: --stop-signal and --stop-timeout", SAME)
            .setup("create --name c1 --stop-signal SIGUSR1 --stop-timeout 3 busybox true")
            .same("inspect -f '{{.Config.StopSignal}} {{.Config.StopTimeout}}' c1"),
        case("run: a single file bind-mounted", SAME)
            .file("f", "content\n")
            .same("run --rm -v {w}/f:/etc/myfile:ro busybox cat /etc/myfile")
            .rc("run --rm -v {w}/f:/etc/myfile:ro busybox sh -c 'echo x > /etc/myfile'")
            .same("run --rm -v {w}/f:/etc/passwd busybox sh -c 'echo appended >> /etc/passwd; ls /etc | grep -c passwd'")
            .same("run --rm -v {w}:/w busybox cat /w/f"),
        case("run: a bind-mounted directory", SAME)
            .file("d/f", "in dir\n")
            .same("run --rm -v {w}/d:/d busybox cat /d/f"),
        case("run: a named volume keeps data", SAME)
            .same("run --rm -v vol1:/data busybox sh -c 'echo x > /data/f'")
            .same("run --rm -v vol1:/data busybox cat /data/f"),
        case(
            "run: --device",
            Expect::Deliberate {
                why: "a host device cannot be handed to a microVM's own kernel",
                says: "--device",
            },
        )
        .rc("run --rm --device /dev/null:/dev/mynull busybox true"),
        case("run: -d prints the ID", SAME).lines(SLEEPER),
        case("run: --rm leaves nothing", SAME)
            .same("run --rm busybox true")
            .same("ps -a"),
    ]
}

fn lifecycle() -> Vec<Case> {
    vec![
        case("stop: a sleep takes the timeout and ends 137", SAME)
            .setup(SLEEPER)
            .same("stop -t 1 c1")
            .same("inspect -f '{{.State.Status}} {{.State.ExitCode}}' c1"),
        case("kill: ps shows the exit at once", SAME)
            .setup(SLEEPER)
            .same("kill c1")
            .same("ps -a --format '{{.Names}} {{.Status}}'"),
        case("kill: -s with a bad signal", SAME)
            .setup(SLEEPER)
            .rc("kill -s FOO c1"),
        case("kill: a stopped container", SAME)
            .setup("create --name c1 busybox true")
            .rc("kill c1")
            .means(&["not running"]),
        case("rm -f of a missing container", SAME).same("rm -f nosuch"),
        case("rm of a missing container", SAME)
            .rc("rm nosuch")
            .means(&["no such container"]),
        case("rm of a running container", SAME)
            .setup(SLEEPER)
            .rc("rm c1")
            .means(&["running"]),
        case("start, stop, kill, inspect of a missing container", SAME)
            .rc("start nosuch")
            .rc("stop nosuch")
            .rc("kill nosuch")
            .rc("inspect nosuch")
            .rc("wait nosuch")
            .rc("logs nosuch"),
        case("create then start -a", SAME)
            .setup("create --name c1 busybox echo hi")
            .same("start -a c1"),
        case("wait prints the exit code", SAME)
            .setup("run -d --name c1 busybox sh -c 'exit 5'")
            .same("wait c1"),
        case("restart", SAME)
            .setup(SLEEPER)
            .same("restart -t 1 c1")
            .same("ps --format '{{.Names}} {{.Status}}'"),
        case("pause and unpause", SAME)
            .setup(SLEEPER)
            .same("pause c1")
            .same("ps --format '{{.Names}} {{.Status}}'")
            .same("unpause c1")
            .same("ps --format '{{.Status}}'"),
        case("rename", SAME)
            .setup("create --name c1 busybox true")
            .same("rename c1 c2")
            .same("ps -a --format {{.Names}}"),
        case("container management group", SAME)
            .setup("container create --name c1 busybox true")
            .same("container ls -a --format {{.Names}}")
            .same("container start -a c1")
            .same("container inspect -f {{.State.Status}} c1")
            .same("container rm c1")
            .same("container prune -f"),
        case("update", SAME)
            .setup(SLEEPER)
            .same("update --restart always c1")
            .same("inspect -f {{.HostConfig.RestartPolicy.Name}} c1")
            .rc("update c1")
            .rc("update --restart always nosuch"),
        case("update: size of a stopped container", SAME)
            .setup("create --name c1 busybox true")
            .same("update --cpus 2 c1")
            .same("inspect -f '{{.HostConfig.NanoCpus}}' c1"),
    ]
}

fn exec() -> Vec<Case> {
    vec![
        case("exec: output and exit code", SAME)
            .setup(SLEEPER)
            .same("exec c1 sh -c 'echo out; echo err >&2; exit 4'"),
        case("exec: -w, -e, -u", SAME)
            .setup(SLEEPER)
            .same("exec -w /etc -e X=1 -u 1000:1000 c1 sh -c 'pwd; echo $X; id'"),
        case("exec: -w of a missing directory", SAME)
            .setup(SLEEPER)
            .exit("exec -w /nonexist c1 pwd")
            .same("exec c1 ls /nonexist"),
        case("exec: -it without a terminal", SAME)
            .setup(SLEEPER)
            .rc("exec -it c1 cat")
            .stdin("x\n"),
        case("exec: in a stopped container", SAME)
            .setup("create --name c1 busybox true")
            .rc("exec c1 true")
            .means(&["not running"]),
        case("exec: in a missing container", SAME).rc("exec nosuch true"),
        case("exec: command not found", SAME)
            .setup(SLEEPER)
            .exit("exec c1 nosuchcmd"),
    ]
}

fn logs_and_cp() -> Vec<Case> {
    vec![
        case("logs: both streams, --tail, -t", SAME)
            .setup("run --name c1 busybox sh -c 'echo a; echo b >&2; sleep 0.3; echo c'")
            .same("logs c1")
            .same("logs --tail 1 c1")
            .same("logs -t c1"),
        case("logs --details", SAME)
            .setup("run --name c1 -l x=y -e E=v --log-opt labels=x,nolabel --log-opt env=E busybox echo a")
            .setup("run --name c2 busybox echo b")
            .same("logs --details c1")
            .same("logs --details -t c2")
            .same("inspect -f '{{.HostConfig.LogConfig.Config.labels}}' c1"),
        case("cp: out of and into a container", SAME)
            .file("f", "from host\n")
            .setup(SLEEPER)
            .same("cp c1:/etc/hostname {w}/h")
            .same("cp {w}/f c1:/tmp/f")
            .same("exec c1 cat /tmp/f"),
        case("cp: a directory out", SAME)
            .setup(SLEEPER)
            .setup("exec c1 sh -c 'mkdir -p /d/e && echo 1 > /d/e/f'")
            .same("cp c1:/d {w}/out")
            .rc("cp c1:/nonexist {w}/x"),
        case("cp: - streams a tar", SAME)
            .setup(SLEEPER)
            .lines("cp c1:/etc/passwd -"),
        case("cp: of a missing container", SAME)
            .rc("cp nosuch:/x {w}/x")
            .means(&["no such container"]),
        case("cp: a directory in, and its contents", SAME)
            .file("d/sub/f", "in dir\n")
            .setup(SLEEPER)
            .same("cp {w}/d c1:/tmp")
            .same("exec c1 cat /tmp/d/sub/f")
            .same("cp {w}/d/. c1:/new")
            .same("exec c1 cat /new/sub/f")
            .same("exec c1 stat -c '%U %G %a' /new/sub/f")
            .rc("cp {w}/d c1:/etc/hostname")
            .rc("cp {w}/nonexist c1:/tmp"),
        case("cp: a directory's contents out", SAME)
            .setup(SLEEPER)
            .setup("exec c1 sh -c 'mkdir -p /d/e && echo 1 > /d/e/f && ln -s /etc/passwd /d/l'")
            .same("cp c1:/d/. {w}/o")
            .same("run --rm -v {w}:/w busybox sh -c 'cat /w/o/e/f; readlink /w/o/l'")
            .same("cp c1:/d/e/f {w}/o/")
            .same("run --rm -v {w}:/w busybox ls /w/o"),
        case(
            "cp: a setuid file comes out without its bit",
            Expect::Deliberate {
                why: "a container's files are the guest's: a setuid or setgid bit never reaches \
                      the host (Docker's keeps them, so a tenant could plant a setuid-root \
                      program on the host)",
                says: "setuid and setgid bits of 1 file(s) from the container were dropped",
            },
        )
        .setup(SLEEPER)
        .setup("exec c1 sh -c 'cp /bin/busybox /su && chmod 4755 /su'")
        .same("cp c1:/su {w}/su")
        .same("run --rm -v {w}:/w busybox stat -c %a /w/su"),
        case("cp: out of and into a stopped container", SAME)
            .file("f", "from host\n")
            .setup("run --name c1 busybox sh -c 'echo kept > /x'")
            .same("cp c1:/x {w}/x")
            .same("run --rm -v {w}:/w busybox cat /w/x")
            .same("cp {w}/f c1:/f")
            .same("start -a c1")
            .same("cp c1:/f {w}/back")
            .same("run --rm -v {w}:/w busybox cat /w/back"),
        case("cp: into what is read-only", SAME)
            .file("f", "from host\n")
            .setup("run -d --name c1 --read-only -v rov:/data -v rov2:/ro:ro busybox sleep 600")
            .rc("cp {w}/f c1:/etc/x")
            .means(&["read-only"])
            .rc("cp {w}/f c1:/ro/x")
            .means(&["read-only"])
            .same("cp {w}/f c1:/data/f")
            .same("exec c1 cat /data/f"),
        case("cp: a stopped container's volume", SAME)
            .file("f", "into the volume\n")
            .setup("create --name c1 -v cpvol:/data busybox cat /data/f /data/g")
            .setup("run --rm -v cpvol:/data busybox sh -c 'echo there > /data/g'")
            .same("cp {w}/f c1:/data/f")
            .same("cp c1:/data/g {w}/g")
            .same("run --rm -v {w}:/w busybox cat /w/g")
            .same("start -a c1"),
        case("cp: into a created container", SAME)
            .file("f", "from host\n")
            .setup("create --name c1 busybox cat /etc/f")
            .same("cp {w}/f c1:/etc/f")
            .same("start -a c1"),
        case("export", SAME)
            .setup("create --name c1 busybox true")
            .rc("export -o {w}/p.tar c1")
            .same("run --rm -v {w}:/w busybox sh -c 'tar tf /w/p.tar | grep -xc bin/sh'"),
        case("export: a running container's changes", SAME)
            .setup(SLEEPER)
            .setup("exec c1 sh -c 'echo x > /added'")
            .rc("export -o {w}/p.tar c1")
            .same("run --rm -v {w}:/w busybox sh -c 'tar xOf /w/p.tar added'"),
        case("diff", SAME)
            .setup(SLEEPER)
            .setup("exec c1 sh -c 'mkdir /new && echo x > /new/f'")
            .same("diff c1"),
        case("commit -a -m", SAME)
            .setup("create --name c1 busybox true")
            .setup("commit -a me -m msg c1 img2")
            .same("inspect -f '{{.Author}} {{.Comment}}' img2"),
    ]
}

fn inspect_and_formats() -> Vec<Case> {
    vec![
        case("inspect: a container's keys", SAME)
            .setup("create --name c1 -p 8080:80 -v /tmp:/h busybox true")
            .keys("inspect c1"),
        case("inspect: an image's keys", SAME).keys("inspect busybox"),
        case("inspect: ports and binds", SAME)
            .setup("create --name c1 -p 8080:80 -v /tmp:/h busybox true")
            .same("inspect -f '{{json .HostConfig.PortBindings}} {{json .HostConfig.Binds}}' c1"),
        case("inspect -f: json, printf, upper, lower, join, index", SAME)
            .setup("create --name c1 -l a=b busybox echo x y")
            .same("inspect -f '{{json .Config.Cmd}}' c1")
            .same("inspect -f '{{printf \"%s-x\" .Name}}' c1")
            .same("inspect -f '{{upper .Config.Image}} {{lower \"AB\"}}' c1")
            .same("inspect -f '{{join .Config.Cmd \",\"}}' c1")
            .same("inspect -f '{{index .Config.Labels \"a\"}}' c1"),
        case("inspect -f: a missing key", SAME)
            .setup("create --name c1 busybox true")
            .rc("inspect -f '{{.Nope}}' c1"),
        case("inspect --type", SAME)
            .same("inspect --type image -f '{{.Os}} {{.Architecture}}' busybox")
            .rc("inspect --type container busybox"),
        case("inspect -f of a network and a volume", SAME)
            .setup("volume create v1")
            .same("network inspect -f '{{.Name}} {{.Driver}}' bridge")
            .same("volume inspect -f '{{.Name}} {{.Driver}}' v1"),
        case("ps --format json keys", SAME)
            .setup("create --name c1 busybox true")
            .keys("ps -a --format json"),
        case("ps --format json values", SAME)
            .setup("create --name c1 -l a=b busybox echo x")
            .same("ps -a --format '{{json .Names}} {{json .Command}} {{json .Labels}} {{json .State}}'"),
        case("ps: table, Label", SAME)
            .setup("create --name c1 -l a=b busybox true")
            .same("ps -a --format 'table {{.Names}}\\t{{.Image}}\\t{{.Label \"a\"}}'"),
        case("ps: COMMAND quoting", SAME)
            .setup("create --name c1 busybox sh -c 'exit 5'")
            .same("ps -a --no-trunc --format {{.Command}}"),
        case("images --format json keys", SAME).keys("images --format json"),
        case("network ls --format json keys", SAME).keys("network ls --format json"),
        case("volume ls --format json keys", SAME)
            .setup("volume create v1")
            .keys("volume ls --format json"),
    ]
}

fn ps_and_images() -> Vec<Case> {
    vec![
        case("ps: empty", SAME).same("ps"),
        case("ps: -a, -q, -n, -l", SAME)
            .setup("create --name c1 busybox true")
            .setup("create --name c2 busybox true")
            .same("ps -a --format {{.Names}}")
            .lines("ps -aq")
            .same("ps -a -n 1 --format {{.Names}}")
            .same("ps -l --format {{.Names}}"),
        case("ps: filters", SAME)
            .setup("create --name c1 -l a=b busybox true")
            .setup(SLEEPER.replace("--name c1", "--name c2").leak())
            .same("ps -a --filter status=exited --format {{.Names}}")
            .same("ps -a --filter status=created --format {{.Names}}")
            .same("ps -a --filter label=a=b --format {{.Names}}")
            .same("ps -a --filter name=c2 --format {{.Names}}")
            .rc("ps --filter bogus=1"),
        case("ps -s", SAME)
            .setup("create --name c1 busybox true")
            .same("ps -as --format '{{.Names}}'")
            .lines("ps -as"),
        case("images", SAME).same("images"),
        case("images: filters", SAME)
            .setup("tag busybox mine:1")
            .same("images --filter reference=mine --format '{{.Repository}}:{{.Tag}}'")
            .same("images --filter dangling=true -q")
            .rc("images --filter bogus=1"),
        case("images -q", SAME).lines("images -q"),
        case("tag and rmi", SAME)
            .same("tag busybox mytag:1")
            .same("images --format '{{.Repository}}:{{.Tag}}' mytag")
            .same("rmi mytag:1"),
        case("tag: errors", SAME)
            .rc("tag nosuch x")
            .rc("tag busybox BAD:TAG")
            .rc("rmi nosuch"),
        case("image management group", SAME)
            .same("image tag busybox it:1")
            .same("image ls --format {{.Repository}} it")
            .same("image inspect -f {{.Os}} it:1")
            .same("image rm it:1")
            .same("image prune -f"),
        case("history", SAME).lines("history busybox"),
        case("save and load", SAME)
            .setup("save -o {w}/b.tar busybox")
            .same("load -i {w}/b.tar"),
    ]
}

fn build() -> Vec<Case> {
    vec![
        case("build: an image that runs", SAME)
            .file(
                "Dockerfile",
                "FROM busybox\nRUN echo built > /f\nCMD [\"cat\", \"/f\"]\n",
            )
            .setup("build -t b1 {w}")
            .same("run --rm b1"),
        case("build: a failing RUN", SAME)
            .file("Dockerfile", "FROM busybox\nRUN exit 3\n")
            .rc("build -q {w}"),
        case("build: a missing Dockerfile", SAME).rc("build {w}/nodir"),
        case("build: rmi of a built image", SAME)
            .file("Dockerfile", "FROM busybox\nRUN echo x > /x\n")
            .setup("build -q -t rb:1 {w}")
            .same("rmi rb:1")
            .same("images -q rb"),
        case("build: -q prints the ID", SAME)
            .file("Dockerfile", "FROM busybox\nENV A=1\n")
            .lines("build -q {w}"),
    ]
}

fn networks_and_volumes() -> Vec<Case> {
    vec![
        case("network ls", SAME)
            .same("network ls --format '{{.Name}} {{.Driver}}'")
            .same("network ls --filter type=builtin --format '{{.Name}}'")
            .lines("network ls"),
        case("network: host and none", SAME)
            .keys("network inspect none")
            .same("network inspect -f '{{.Name}} {{.Driver}}' host")
            .rc("network rm host")
            .means(&["pre-defined"]),
        case("network create, ls, rm", SAME)
            .lines("network create n1")
            .same("network ls --filter name=n1 --format {{.Name}}")
            .rc("network create n1")
            .same("network rm n1")
            .rc("network rm nosuch"),
        case("network inspect keys", SAME)
            .setup("network create n1")
            .keys("network inspect n1"),
        case("run on a network", SAME)
            .setup("network create n1")
            .same("run --rm --network n1 busybox sh -c 'ip -o -4 addr show eth0 | wc -l'")
            .rc("run --rm --network nosuch busybox true"),
        case("run --network none", SAME)
            .same("run --rm --network none busybox sh -c 'ls /sys/class/net'"),
        case("volume create, ls, rm", SAME)
            .same("volume create v1")
            .same("volume ls")
            .same("volume ls -q --filter name=v1")
            .same("volume rm v1")
            .rc("volume rm nosuch"),
        case("volume inspect keys", SAME)
            .setup("volume create v1")
            .keys("volume inspect v1"),
        case(
            "volume prune",
            Expect::Deliberate {
                why: "mvm prunes as Docker 23 and later do: anonymous volumes only, -a for every \
                      unused one (dockerd 20.10 here removes every unused volume)",
                says: "Total reclaimed space",
            },
        )
        .setup("volume create v1")
        .same("volume prune -f")
        .same("volume ls -q"),
    ]
}

fn system() -> Vec<Case> {
    vec![
        case("unknown command", SAME).rc("nosuchcmd"),
        case("unknown flag", SAME).rc("ps --bogus"),
        case("system df", SAME).same("system df"),
        case("system prune", SAME)
            .setup("create --name c1 busybox true")
            .rc("system prune -f")
            .same("ps -aq"),
        case("top", SAME)
            .setup(SLEEPER)
            .lines("top c1")
            .rc("top nosuch")
            .same("pause c1")
            .lines("top c1"),
        case(
            "top: the columns",
            Expect::Deliberate {
                why: "a microVM's processes have no host PID: top shows Docker's ps -ef columns \
                      with the PIDs the container gives them (its command is PID 1)",
                says: "sleep 600",
            },
        )
        .setup(SLEEPER)
        .same("top c1"),
        case("image: the management group", SAME)
            .file("ctx/Dockerfile", "FROM busybox\nRUN echo built > /b\n")
            .same("image ls --format '{{.Repository}}:{{.Tag}}' busybox")
            .setup("image build -q -t grp:1 {w}/ctx")
            .same("run --rm grp:1 cat /b")
            .rc("image rm grp:1")
            .same("image ls -q grp"),
        case("stats: PIDs", SAME)
            .setup(SLEEPER)
            .same("stats --no-stream --format '{{.Name}} {{.PIDs}}' c1"),
        case("port", SAME)
            .setup("run -d --name c1 -p 8080:80 -p 127.0.0.1:5353:53/udp busybox sleep 600")
            .same("port c1")
            .same("port c1 80")
            .same("ps --format '{{.Ports}}'")
            .same("inspect -f '{{json .NetworkSettings.Ports}}' c1"),
        case("events", SAME).rc("events --since 0 --until 1"),
        case("events: a container's life", SAME)
            .setup("run --name ev1 busybox true")
            .setup("rm ev1")
            // Docker's daemon may record the destroy after rm returns: left out here.
            .same(
                "events --since 60s --until 0s --filter container=ev1 --filter event=create \
                 --filter event=attach --filter event=start --filter event=die \
                 --format '{{.Type}} {{.Action}} {{.Actor.Attributes.name}}'",
            ),
    ]
}
