"""A labelled corpus for measuring secret detection: snippets of notes, Chinese and English, with every
secret value's span marked.

Each snippet comes from a template filled with made-up values (seeded, so the corpus is the same on every
run). Templates are grouped by *family*: the positive families are the shapes credentials take in real
notes (see the module docstring of ``ingest.secrets``), the negative families are strings people search
for that look a bit like secrets (container ids, SHAs, checksums, model names, URLs, ports, versions...)
and prose that talks about passwords without giving one.

Three splits: ``tune`` (the templates the detector was developed against), ``heldout`` (other wordings,
labels, commands, hosts and value shapes of the same families, written at the same time but never used
while tuning), and ``fresh`` (written after the detector was frozen, to see what new wordings cost).
Filler lines around the snippets differ per split. ``bench/results/secrets.md`` says how to read each.

Decisions a labeller has to make, written down once:

* the *value* is the secret, not the label or the user name (``root / «Abc#123»``);
* base64 in a config file is a secret only under a secret's name (``password: «cGFzc3dvcmQ=»`` in a
  Kubernetes Secret); ``caBundle:``, ``icon:``, image data URIs are not;
* UUIDs, hex digests and container ids are not secrets outside a credential context;
* placeholders (``<password>``, ``${DB_PASSWORD}``, ``******``) are not secrets.

Provider prefixes are assembled at run time (``"sk" + "-"``) so the source does not look like a leak.
"""

from __future__ import annotations

import json
import random
import re
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass

MARK = re.compile(r"«(.+?)»", re.DOTALL)
SPLITS = ("tune", "heldout", "fresh")

SK = "sk" + "-"
HF = "hf" + "_"
GHP = "gh" + "p_"
AKIA = "AK" + "IA"


@dataclass(frozen=True)
class Case:
    """One snippet: its text and the ``(start, end)`` of each secret value in it."""

    id: str
    split: str
    family: str
    lang: str
    text: str
    secrets: tuple[tuple[int, int], ...]

    @property
    def positive(self) -> bool:
        return bool(self.secrets)

    def values(self) -> list[str]:
        return [self.text[s:e] for s, e in self.secrets]


def unmark(marked: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """``"pw «x»"`` -> ``("pw x", ((3, 4),))``."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = n = 0
    for m in MARK.finditer(marked):
        out.append(marked[pos : m.start()])
        n += m.start() - pos
        out.append(m.group(1))
        spans.append((n, n + len(m.group(1))))
        n += len(m.group(1))
        pos = m.end()
    out.append(marked[pos:])
    return "".join(out), tuple(spans)


# -- made-up values ------------------------------------------------------------------------------------------

B62 = string.ascii_letters + string.digits
UPPER36 = string.ascii_uppercase + string.digits
LOWER36 = string.ascii_lowercase + string.digits
HEXD = "0123456789abcdef"
PW_SYMBOLS = "#@!%&*_.-+?^"


class Gen:
    """Random made-up values of the shapes found in notes; one instance per snippet."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def pick(self, *options: str) -> str:
        return self.r.choice(options)

    def chars(self, n: int, alphabet: str) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def classes(self, n: int, alphabet: str, need: tuple[str, ...]) -> str:
        """``n`` characters of ``alphabet`` holding at least one character of each ``need`` set."""
        while True:
            v = self.chars(n, alphabet)
            if all(any(c in s for c in v) for s in need):
                return v

    # secrets
    def random_pw(self, n: int | None = None) -> str:
        """A generated password: what a password manager or a cloud console hands out."""
        n = n or self.r.randint(10, 16)
        sym = self.r.random() < 0.5
        alphabet = B62 + (PW_SYMBOLS if sym else "")
        need = (string.ascii_lowercase, string.ascii_uppercase, string.digits) + (
            (PW_SYMBOLS,) if sym else ()
        )
        v = self.classes(n, alphabet, need)
        return v if v[0] not in "-#" else "K" + v[1:]

    def human_pw(self) -> str:
        """A password a person chose: words, a year, a symbol."""
        r = self.r
        word = r.choice(
            ["Abc", "admin", "Admin", "zhang", "Huawei", "Qwer", "pass", "Root", "test", "Sky", "li"]
        )
        year = r.choice(["2019", "2020", "2021", "2023", "2024", "123", "1234", "888", "12345", "666"])
        sym = r.choice(["#", "@", "!", "", "$", "!@#", "_", "*"])
        tail = r.choice(["", "pro", "db", "Xy", "!", "ok", "srv"])
        shape = r.randint(0, 3)
        if shape == 0:
            return f"{word}{sym}{year}{tail}" if sym else f"{word}{year}{tail}!"
        if shape == 1:
            return f"{word}{year}{sym or '@'}{tail}"
        if shape == 2:
            return f"{word[0].upper()}{r.choice(['@', '#'])}ss{r.choice(['w0rd', 'W0rd', 'word'])}{year}"
        return f"{r.choice(['Qaz', 'Wsx', '1qaz', '2wsx'])}{r.choice(['@WSX', '#EDC', '!QAZ', '3edc'])}{year}"

    def short_pw(self) -> str:
        """The passwords people still use: 123456, 888888, 6-8 digits, or a word with digits."""
        return self.pick(
            "123456",
            "888888",
            "12345678",
            "666666",
            self.chars(self.r.randint(6, 8), string.digits),
            "abc" + self.chars(3, string.digits),
            "a" + self.chars(6, string.digits),
        )

    def any_pw(self) -> str:
        return self.r.choice([self.random_pw, self.human_pw, self.short_pw])()

    def access_key(self) -> str:  # MinIO / S3 access key: 20 upper-case letters and digits
        return self.classes(20, UPPER36, (string.ascii_uppercase, string.digits))

    def secret_key(self) -> str:  # MinIO / S3 secret key: 40 base64-ish characters
        return self.classes(40, B62 + "/+", (string.ascii_lowercase, string.ascii_uppercase, string.digits))

    def b62(self, n: int) -> str:
        return self.classes(n, B62, (string.ascii_lowercase, string.ascii_uppercase, string.digits))

    def hexs(self, n: int) -> str:
        return self.classes(n, HEXD, (string.digits, "abcdef"))

    def openai(self) -> str:
        return SK + self.pick("", "proj-") + self.b62(48)

    def hf(self) -> str:
        return HF + self.b62(34)

    def github(self) -> str:
        return GHP + self.b62(36)

    def aws(self) -> str:
        return AKIA + self.classes(16, UPPER36, (string.ascii_uppercase, string.digits))

    # context
    def ip(self) -> str:
        r = self.r
        return self.pick(
            f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
            f"192.168.{r.randint(0, 255)}.{r.randint(1, 254)}",
            f"172.{r.randint(16, 31)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
        )

    def hostname(self) -> str:
        r = self.r
        return self.pick(
            f"gpu-node{r.randint(1, 40):02d}.lab.internal",
            f"jump{r.randint(1, 9)}.example.cn",
            f"train-{r.randint(1, 99)}.cluster.local",
            f"dev{r.randint(1, 9)}.corp.example.com",
        )

    def host(self) -> str:
        return self.ip() if self.r.random() < 0.6 else self.hostname()

    def port(self) -> str:
        return self.pick("22", "2222", str(self.r.randint(20000, 40000)), str(self.r.randint(10022, 10099)))

    def user(self) -> str:
        return self.pick("root", "ubuntu", "admin", "zhangsan", "dev", "ops", "deploy", "lisi", "test01")

    def product(self) -> str:
        return self.pick(
            "Grafana",
            "Harbor",
            "MinIO",
            "Jenkins",
            "宝塔面板",
            "Nacos",
            "GitLab",
            "RabbitMQ",
            "Kibana",
            "Portainer",
        )

    def sp(self) -> str:
        """Spacing people leave between a label and a value: several spaces, a tab, a full-width space."""
        return self.pick(" ", "  ", "   ", "\t", "\u3000", "  ")

    def container(self) -> str:
        return self.hexs(12) if self.r.random() < 0.6 else self.hexs(64)

    def uuid(self) -> str:
        h = self.hexs(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


Template = Callable[[Gen], str]

# -- positive templates: tune ------------------------------------------------------------------------------

TUNE_POS: dict[str, list[Template]] = {
    "label_space": [
        lambda g: (
            f"MinIO 控制台\nAccess Key{g.sp()}«{g.access_key()}»\nSecret Key{g.sp()}«{g.secret_key()}»\n"
        ),
        lambda g: f"- Access Key  «{g.access_key()}»\n- Secret Key  «{g.secret_key()}»",
        lambda g: f"测试库 password «{g.short_pw()}»，不要外传",
        lambda g: f"Username  {g.user()}\nPassword  «{g.any_pw()}»",
        lambda g: f"api key{g.sp()}«{g.b62(32)}»",
        lambda g: f"root password{g.sp()}«{g.any_pw()}»",
        lambda g: f"gitlab runner token «{g.b62(20)}»",
        lambda g: f"password «{g.short_pw()}»",
    ],
    "zh_label": [
        lambda g: f"登录密码 «{g.human_pw()}»",
        lambda g: f"{g.product()} 密码 «{g.b62(16)}»",
        lambda g: f"{g.product()} 密码 «{g.any_pw()}»",
        lambda g: f"数据库密码\u3000«{g.any_pw()}»",
        lambda g: f"初始密码「«{g.human_pw()}»」，首次登录后修改",
        lambda g: f"**登录密码** «{g.random_pw()}»",
        lambda g: f"- 服务器：{g.host()}\n- 密码：«{g.any_pw()}»",
        lambda g: f"管理后台 http://{g.host()}:8080 账号 admin 密码 «{g.human_pw()}»",
    ],
    "account_section": [
        lambda g: f"## 账号密码\n\n{g.user()}  «{g.any_pw()}»\n{g.user()} / «{g.any_pw()}»\n",
        lambda g: f"### 账号密码\n- 用户名：{g.user()}\n- «{g.any_pw()}»\n",
        lambda g: f"账号密码\n{g.user()} «{g.human_pw()}»\n",
        lambda g: (
            "| 主机 | 用户 | 密码 |\n|---|---|---|\n"
            f"| {g.ip()} | root | «{g.any_pw()}» |\n| {g.ip()} | {g.user()} | «{g.any_pw()}» |"
        ),
    ],
    "login_next_line": [
        lambda g: (
            f"ssh -p {g.port()} root@{g.host()}\n\n«{g.random_pw(12)}»\n\n"
            f"ssh -p {g.port()} root@{g.host()}\n\n«{g.random_pw(12)}»\n\n"
            f"ssh -p {g.port()} root@{g.host()}\n\n«{g.random_pw(12)}»\n"
        ),
        lambda g: f"ssh {g.user()}@{g.host()}\n«{g.any_pw()}»",
        lambda g: f"mysql -h {g.host()} -P 3306 -u root -p\n«{g.any_pw()}»",
        lambda g: f"psql -h {g.host()} -U postgres -d notes\n«{g.random_pw()}»",
        lambda g: f"redis-cli -h {g.host()} -p 6379\n«{g.random_pw()}»",
        lambda g: f"docker login registry.example.cn -u {g.user()}\n«{g.any_pw()}»",
        lambda g: f"ftp {g.host()}\n«{g.human_pw()}»",
    ],
    "user_next_line": [
        lambda g: f"用户名：{g.user()}\n«{g.any_pw()}»",
        lambda g: f"账号 {g.user()}\n«{g.random_pw()}»",
        lambda g: f"user: {g.user()}\n«{g.random_pw()}»",
        lambda g: f"用户名 {g.user()}\n\n«{g.human_pw()}»",
    ],
    "cli_flag": [
        lambda g: f"docker run -d -e MYSQL_ROOT_PASSWORD=«{g.any_pw()}» -p 3306:3306 mysql:8",
        lambda g: f"docker login -u {g.user()} -p «{g.random_pw()}» registry.example.cn",
        lambda g: f"mysql -uroot -p«{g.random_pw()}» -h {g.host()}",
        lambda g: f"redis-cli -h {g.host()} -a «{g.random_pw()}» ping",
        lambda g: f"sshpass -p «{g.any_pw()}» ssh -p {g.port()} root@{g.host()}",
        lambda g: f"mongosh --username admin --password «{g.random_pw()}» {g.host()}",
    ],
    "provider_token": [
        lambda g: f"export OPENAI_API_KEY=«{g.openai()}»",
        lambda g: f"HF token: «{g.hf()}»",
        lambda g: f"huggingface-cli login --token «{g.hf()}»",
        lambda g: f"«{g.openai()}»",
        lambda g: f"git clone https://«{g.github()}»@github.com/me/notes.git",
        lambda g: f"aws_access_key_id = «{g.aws()}»",
    ],
    "assignment": [
        lambda g: f"DB_PASSWORD=«{g.any_pw()}»\nDB_HOST={g.host()}",
        lambda g: f"spring:\n  datasource:\n    password: «{g.any_pw()}»",
        lambda g: f'{{"api_key": "«{g.b62(32)}»", "model": "qwen2.5:7b-instruct"}}',
        lambda g: f"apiVersion: v1\nkind: Secret\ndata:\n  password: «{g.b62(12)}==»",
    ],
    "url_creds": [
        lambda g: f"DATABASE_URL=mysql://root:«{g.any_pw()}»@{g.host()}:3306/app",
        lambda g: f"redis://:«{g.random_pw()}»@{g.host()}:6379/0",
    ],
}

# -- positive templates: held out (other wordings of the same families) ---------------------------------------

HELDOUT_POS: dict[str, list[Template]] = {
    "label_space": [
        lambda g: f"AccessKey{g.sp()}«{g.access_key()}»\nSecretKey{g.sp()}«{g.secret_key()}»",
        lambda g: f"| Access Key | «{g.access_key()}» |\n| Secret Key | «{g.secret_key()}» |",
        lambda g: f"PASSWORD   «{g.any_pw()}»",
        lambda g: f"default login admin, pass «{g.short_pw()}»",
        lambda g: f"secret  «{g.b62(40)}»",
        lambda g: f"The wifi password «{g.human_pw()}» works on floor 3",
        lambda g: f"Access token\t«{g.b62(40)}»",
        lambda g: f"mysql root passwd «{g.short_pw()}»",
    ],
    "zh_label": [
        lambda g: f"堡垒机密码 «{g.random_pw()}»",
        lambda g: f"Wi-Fi 密码：«{g.short_pw()}»",
        lambda g: f"root密码«{g.human_pw()}»",
        lambda g: f"{g.product()} 的密码 «{g.any_pw()}»",
        lambda g: f"新密码 «{g.random_pw()}»（上周改的）",
        lambda g: f"口令 «{g.any_pw()}»",
        lambda g: f"> 管理员密码：«{g.human_pw()}»",
        lambda g: f"邮箱 dev@example.com，密码 «{g.any_pw()}»",
    ],
    "account_section": [
        lambda g: f"## 帐号信息\n\n{g.user()}\t«{g.any_pw()}»\n{g.user()}\t«{g.any_pw()}»\n",
        lambda g: f"### 登录信息\n\n* {g.user()} / «{g.random_pw()}»",
        lambda g: f"**用户名密码**\n{g.user()}：«{g.any_pw()}»",
        lambda g: (
            f"| host | user | pwd |\n| --- | --- | --- |\n| {g.hostname()} | {g.user()} | «{g.any_pw()}» |"
        ),
    ],
    "login_next_line": [
        lambda g: (
            f"跳板机\nssh root@{g.host()} -p {g.port()}\n«{g.random_pw(12)}»\n"
            f"ssh root@{g.host()} -p {g.port()}\n«{g.random_pw(12)}»\n"
        ),
        lambda g: f"mysql -u root -p -h {g.host()}\n\n«{g.human_pw()}»",
        lambda g: f"sftp -P 2022 {g.user()}@{g.host()}\n«{g.random_pw()}»",
        lambda g: f"telnet {g.host()} 23\n«{g.short_pw()}»",
        lambda g: f"mongosh mongodb://{g.host()}:27017 -u admin -p\n«{g.random_pw()}»",
        lambda g: f"docker login --username {g.user()} harbor.example.cn\n«{g.random_pw()}»",
        lambda g: f"su - root\n«{g.human_pw()}»",
    ],
    "user_next_line": [
        lambda g: f"帐号：{g.user()}\n«{g.any_pw()}»",
        lambda g: f"login: {g.user()}\n«{g.random_pw()}»",
        lambda g: f"用户 {g.user()}\n«{g.human_pw()}»",
        lambda g: f"username {g.user()}\n«{g.random_pw()}»",
    ],
    "cli_flag": [
        lambda g: f"docker run -e POSTGRES_PASSWORD=«{g.any_pw()}» -d postgres:16",
        lambda g: f"docker login --password «{g.random_pw()}» -u {g.user()} harbor.example.cn",
        lambda g: f"mysqldump -uroot -p«{g.any_pw()}» notes > notes.sql",
        lambda g: f"redis-cli -a «{g.any_pw()}» --no-auth-warning info",
        lambda g: f"mongo -u admin -p «{g.random_pw()}» --authenticationDatabase admin",
        lambda g: f"lftp -u {g.user()},«{g.random_pw()}» sftp://{g.host()}",
    ],
    "provider_token": [
        lambda g: f"OpenAI 的 key 是 «{g.openai()}»",
        lambda g: f"HUGGING_FACE_HUB_TOKEN=«{g.hf()}» python train.py",
        lambda g: f"token «{g.github()}» 有 repo 权限",
        lambda g: f"curl https://api.openai.com/v1/models -H 'Authorization: Bearer «{g.openai()}»'",
        lambda g: f"«{g.hf()}»",
        lambda g: f"AWS key «{g.aws()}»",
    ],
    "assignment": [
        lambda g: f"environment:\n  - REDIS_PASSWORD=«{g.any_pw()}»",
        lambda g: f'password = "«{g.any_pw()}»"',
        lambda g: f"MINIO_SECRET_KEY: «{g.secret_key()}»",
        lambda g: f"client_secret=«{g.hexs(32)}»",
    ],
    "url_creds": [
        lambda g: f"postgresql://postgres:«{g.any_pw()}»@{g.host()}:5432/rag",
        lambda g: (
            f"git remote add origin https://{g.user()}:«{g.random_pw()}»@gitlab.example.cn/ml/notes.git"
        ),
    ],
}

# -- negative templates -------------------------------------------------------------------------------------

MODELS = (
    "qwen2.5:7b-instruct",
    "bge-m3",
    "Llama-3-8B",
    "Qwen/Qwen2.5-7B-Instruct",
    "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "deepseek-r1:14b",
    "BAAI/bge-large-zh-v1.5",
    "gemma3:27b",
    "intfloat/multilingual-e5-small",
    "mistral-7b-instruct-v0.2.Q4_K_M.gguf",
)

TUNE_NEG: dict[str, list[Template]] = {
    "container_id": [
        lambda g: f"docker start {g.container()}",
        lambda g: f"docker exec -it {g.container()} bash",
        lambda g: f"docker commit {g.container()} myimage:v2",
        lambda g: f"CONTAINER ID   IMAGE\n{g.hexs(12)}   ollama/ollama",
    ],
    "git_sha": [
        lambda g: f"commit {g.hexs(40)}\nAuthor: Me <me@example.com>",
        lambda g: f"git checkout {g.hexs(7)}",
        lambda g: f"git cherry-pick {g.hexs(40)}",
    ],
    "checksum": [
        lambda g: f"sha256sum model.gguf\n{g.hexs(64)}  model.gguf",
        lambda g: f"docker pull ollama/ollama@sha256:{g.hexs(64)}",
        lambda g: f"md5: {g.hexs(32)}",
    ],
    "model_name": [
        lambda g: f"ollama run {g.pick(*MODELS)}",
        lambda g: f"模型用 {g.pick(*MODELS)}，显存 24G 够用",
        lambda g: f'model = "{g.pick(*MODELS)}"',
    ],
    "url": [
        lambda g: (
            f"参考 https://blog.csdn.net/qq_{g.chars(8, string.digits)}/article/details/{g.chars(9, string.digits)}"
        ),
        lambda g: f"https://huggingface.co/{g.pick(*MODELS)}/resolve/main/config.json",
        lambda g: f"http://{g.host()}:{g.port()}/v1/chat/completions",
    ],
    "port_version": [
        lambda g: (
            f"ollama 默认端口 11434，vLLM 8000，版本 {g.r.randint(0, 3)}.{g.r.randint(0, 12)}.{g.r.randint(0, 9)}"
        ),
        lambda g: f"docker run -p {g.port()}:{g.port()} nginx:1.25.3",
        lambda g: (
            f"CUDA Version: 12.{g.r.randint(0, 4)}  Driver Version: 535.{g.r.randint(10, 199)}.{g.r.randint(1, 9)}"
        ),
    ],
    "path_command": [
        lambda g: "pip install -U vllm==0.6.3 -i https://pypi.tuna.tsinghua.edu.cn/simple",
        lambda g: "conda create -n py310 python=3.10 -y && conda activate py310",
        lambda g: f"scp -P {g.port()} ./ckpt/model.safetensors root@{g.host()}:/data/models/",
        lambda g: f"ssh -p {g.port()} root@{g.host()}\n\nnvidia-smi\n\ncd /data/models",
        lambda g: f"ssh {g.user()}@{g.host()}\nconda activate py310",
    ],
    "zh_prose": [
        lambda g: "忘记密码可以在登录页点击“找回密码”，密码长度至少 8 位。",
        lambda g: "密码要定期修改，不要把密码写在笔记里。",
        lambda g: "## 账号密码\n\n账号密码统一放在公司的密码管理器里，这里不记录。",
        lambda g: f"用户名：{g.user()}\n登录后先改密码。",
        lambda g: "password 字段不能为空，token 有效期 7 天。",
    ],
    "code": [
        lambda g: 'api_key = os.environ["OPENAI_API_KEY"]',
        lambda g: (
            "def check_password(user, password):\n    return bcrypt.checkpw(password, user.hashed_password)"
        ),
        lambda g: "max_tokens: 4096\ntemperature: 0.2",
        lambda g: "secret_key_ref:\n  name: app-secret\n  key: password",
    ],
    "base64_config": [
        lambda g: f"caBundle: {g.b62(60)}==",
        lambda g: f"![logo](data:image/png;base64,iVBORw0KGgo{g.b62(60)}=)",
    ],
    "hex_color_uuid": [
        lambda g: f"color: #{g.hexs(6)}; background: #{g.hexs(6)};",
        lambda g: f"request_id: {g.uuid()}",
        lambda g: f"trace {g.uuid()} 耗时 35ms",
    ],
}

HELDOUT_NEG: dict[str, list[Template]] = {
    "container_id": [
        lambda g: f"docker logs -f {g.container()}",
        lambda g: f"docker stop {g.hexs(12)} && docker rm {g.hexs(12)}",
        lambda g: f"容器 {g.hexs(12)} 退出码 137，OOM 了",
    ],
    "git_sha": [
        lambda g: f"git revert {g.hexs(40)}",
        lambda g: f"* {g.hexs(7)} fix: 修复 BMX 分词",
        lambda g: f"HEAD is now at {g.hexs(7)} Merge branch 'dev'",
    ],
    "checksum": [
        lambda g: f"SHA256 ({g.pick('model.gguf', 'ckpt.tar')}) = {g.hexs(64)}",
        lambda g: f'etag: "{g.hexs(32)}"',
        lambda g: f"Digest: sha256:{g.hexs(64)}",
    ],
    "model_name": [
        lambda g: f"ollama pull {g.pick(*MODELS)}",
        lambda g: f"huggingface-cli download {g.pick(*MODELS)} --local-dir ./models",
        lambda g: f"| {g.pick(*MODELS)} | 0.{g.r.randint(60, 90)} |",
    ],
    "url": [
        lambda g: f"https://zhuanlan.zhihu.com/p/{g.chars(9, string.digits)}",
        lambda g: (
            f"[文档](https://github.com/ollama/ollama/blob/main/docs/faq.md#{g.pick('how-do-i-configure', 'gpu')})"
        ),
        lambda g: f"git clone git@github.com:{g.user()}/rag-notes.git",
    ],
    "port_version": [
        lambda g: f"端口：{g.port()}",
        lambda g: f"torch==2.{g.r.randint(0, 5)}.{g.r.randint(0, 2)}+cu121",
        lambda g: f"Ubuntu 22.04.{g.r.randint(1, 5)} LTS, kernel 5.15.0-{g.r.randint(50, 120)}-generic",
    ],
    "path_command": [
        lambda g: "conda install -c conda-forge faiss-cpu=1.8.0",
        lambda g: f"mysql -h {g.host()} -P 3306 -u root -p\nshow databases;",
        lambda g: f"ssh root@{g.host()} -p {g.port()}\nhtop",
        lambda g: "export PATH=/usr/local/cuda-12.1/bin:$PATH",
        lambda g: f"ssh -p {g.port()} {g.user()}@{g.host()}\n\npython3",
    ],
    "zh_prose": [
        lambda g: "密码：见飞书文档",
        lambda g: "修改 root 密码用 passwd 命令，密码不会回显。",
        lambda g: "如果提示密码错误，检查大小写锁定。",
        lambda g: "### 登录信息\n\n登录信息请向管理员申请。",
        lambda g: "The password must contain 8 characters, one digit and one symbol.",
    ],
    "code": [
        lambda g: "token = tokenizer.encode(text)\nkey = cache_key(model_name)",
        lambda g: 'if not password:\n    raise ValueError("password required")',
        lambda g: "PASSWORD_MIN_LENGTH = 8",
        lambda g: "self.secret_key = settings.secret_key",
    ],
    "base64_config": [
        lambda g: f"icon: {g.b62(44)}=",
        lambda g: f"certificate-authority-data: LS0tLS1CRUdJTi{g.b62(50)}",
    ],
    "hex_color_uuid": [
        lambda g: f"主题色 #{g.hexs(6)}",
        lambda g: f'"id": "{g.uuid()}"',
        lambda g: f"qdrant point {g.uuid()}",
    ],
}

# -- a third split, written after the detector was frozen (git history: after the commit that added the
# context rules), by someone trying to think of notes rather than of the rules. Scored as it came out
# first; see bench/results/secrets.md for the figures before and after any change made for it.

FRESH_POS: dict[str, list[Template]] = {
    "label_space": [
        lambda g: f"阿里云 OSS\nAccessKey ID   «LTAI5t{g.b62(18)}»\nAccessKey Secret   «{g.b62(30)}»",
        lambda g: f"Password\t\t«{g.any_pw()}»\nUsername\t\t{g.user()}",
        lambda g: f"admin password is «{g.human_pw()}»",
        lambda g: f"Jupyter token  «{g.hexs(48)}»",
    ],
    "zh_label": [
        lambda g: f"密码是«{g.any_pw()}»",
        lambda g: f"服务器 IP：{g.ip()}，账号：root，密码：«{g.any_pw()}»",
        lambda g: f"初始密码均为 «{g.human_pw()}»",
        lambda g: f"VNC 密码 «{g.short_pw()}»",
        lambda g: f"数据库 root 的密码：«{g.random_pw()}»",
    ],
    "account_section": [
        lambda g: (
            "## 服务器账号\n\n| IP | 账号 | 密码 |\n|:--|:--|:--|\n"
            f"| {g.ip()} | {g.user()} | «{g.any_pw()}» |\n| {g.ip()} | root | «{g.any_pw()}» |"
        ),
        lambda g: (
            f"# 各平台账号\n- 阿里云：{g.user()} / «{g.any_pw()}»\n- 腾讯云：{g.user()} / «{g.any_pw()}»"
        ),
        lambda g: f"账号密码：\n{g.user()}\n«{g.random_pw()}»",
    ],
    "login_next_line": [
        lambda g: f"$ ssh -p 2222 ubuntu@{g.ip()}\nubuntu@{g.ip()}'s password: «{g.random_pw()}»",
        lambda g: f"ssh {g.user()}@{g.host()}  # 密码 «{g.any_pw()}»",
        lambda g: f"ssh root@{g.ip()}\n«{g.random_pw(12)}»",
        lambda g: f"psql postgresql://postgres@{g.host()}:5432/notes\n«{g.random_pw()}»",
    ],
    "user_next_line": [
        lambda g: f"用户名\n{g.user()}\n密码\n«{g.any_pw()}»",
        lambda g: f"账号：{g.user()}\t«{g.any_pw()}»",
        lambda g: f"- 用户：{g.user()}\n- «{g.random_pw()}»",
    ],
    "cli_flag": [
        lambda g: f"mc alias set myminio http://{g.ip()}:9000 «{g.access_key()}» «{g.secret_key()}»",
        lambda g: f"PGPASSWORD=«{g.any_pw()}» psql -h {g.host()} -U postgres",
        lambda g: f"docker exec -it mysql mysql -uroot -p«{g.random_pw()}»",
        lambda g: f"kubectl create secret generic db --from-literal=password=«{g.any_pw()}»",
        lambda g: f"htpasswd -bc /etc/nginx/.htpasswd admin «{g.any_pw()}»",
    ],
    "provider_token": [
        lambda g: f"glpat-«{g.b62(20)}»",
        lambda g: f'"apiKey": "«{g.openai()}»"',
        lambda g: f"OPENAI_API_BASE=https://api.deepseek.com\nOPENAI_API_KEY=«{SK}{g.hexs(32)}»",
    ],
    "assignment": [
        lambda g: f"{g.host()}:5432:*:postgres:«{g.random_pw()}»",
        lambda g: f"requirepass «{g.any_pw()}»",
        lambda g: f"spring.datasource.password=«{g.any_pw()}»",
        lambda g: f"MYSQL_PWD=«{g.any_pw()}» mysql -uroot",
    ],
    "url_creds": [
        lambda g: f"mongodb://admin:«{g.random_pw()}»@{g.host()}:27017/?authSource=admin",
        lambda g: (
            f"pip config set global.index-url https://{g.user()}:«{g.random_pw()}»@nexus.example.cn/repository/pypi/simple"
        ),
    ],
}

FRESH_NEG: dict[str, list[Template]] = {
    "container_id": [
        lambda g: f"docker inspect {g.hexs(12)} | grep IPAddress",
        lambda g: f"docker cp {g.hexs(12)}:/app/log.txt .",
    ],
    "git_sha": [
        lambda g: f"git reset --hard {g.hexs(40)}",
        lambda g: f"Merge: {g.hexs(7)} {g.hexs(7)}",
    ],
    "checksum": [
        lambda g: f"sha1: {g.hexs(40)}",
        lambda g: f'"integrity": "sha512-{g.b62(86)}=="',
    ],
    "model_name": [
        lambda g: "vllm serve Qwen/Qwen2.5-72B-Instruct-AWQ --tensor-parallel-size 4",
        lambda g: f"ollama create mymodel -f Modelfile && ollama run {g.pick(*MODELS)}",
    ],
    "url": [
        lambda g: "pip config set global.index-url https://mirrors.aliyun.com/pypi/simple/",
        lambda g: "wget https://github.com/ollama/ollama/releases/download/v0.5.7/ollama-linux-amd64.tgz",
    ],
    "port_version": [
        lambda g: "EXPOSE 8080\nnode v20.11.1",
        lambda g: "| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |",
    ],
    "path_command": [
        lambda g: f"ssh root@{g.host()}\nsudo systemctl restart ollama",
        lambda g: f"ssh {g.user()}@{g.host()}\n\nwatch -n 1 nvidia-smi",
        lambda g: f"ssh -p {g.port()} root@{g.host()}\ntmux attach -t train01",
        lambda g: f"ssh root@{g.host()}\nexit",
        lambda g: "mysql -u root -p\nEnter password:",
        lambda g: "su - postgres\npsql",
        lambda g: f"ssh root@{g.host()}\ndf -h",
        lambda g: f"ssh root@{g.host()}\nnvidia-smi\nollama ps",
    ],
    "zh_prose": [
        lambda g: "密码学基础：对称加密与非对称加密",
        lambda g: "账号密码登录方式已废弃，改用 SSO。",
        lambda g: "重置密码后 token 会失效，需要重新登录。",
        lambda g: "用户名：管理员\n密码：联系运维",
    ],
    "code": [
        lambda g: 'password = request.form["password"]',
        lambda g: 'const token = localStorage.getItem("token");',
        lambda g: 'if (!apiKey) throw new Error("missing key");',
        lambda g: "for key, value in d.items():\n    print(key, value)",
    ],
    "base64_config": [
        lambda g: f"background: url(data:image/svg+xml;base64,PHN2ZyB4bWxucz0i{g.b62(40)});",
        lambda g: f"tls.crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t{g.b62(40)}",
    ],
    "hex_color_uuid": [
        lambda g: f'{{"trace_id": "{g.uuid()}"}}',
        lambda g: f"--color-primary: #{g.hexs(6)};",
    ],
}

# Filler lines placed around snippets (they are negatives too); one pool per split.
FILLER = {
    "tune": [
        "用 `docker compose up -d` 启动服务，`docker logs -f app` 看日志。",
        "BM25 与向量检索各有优缺点，混合检索一般更稳。",
        "今天在 4090 上跑 Qwen2.5-7B-Instruct，吞吐约 1500 tokens/s。",
        "# 服务器记录",
        "## 2024-05-12",
        "",
    ],
    "fresh": [
        "> 摘自内部 wiki，2023 年整理",
        "上次改动见周报。",
        "## TODO",
        "",
    ],
    "heldout": [
        "备注：周五之前迁移完。",
        "显存不够时把 `--max-model-len` 调小。",
        "See the runbook for the restart order.",
        "# 运维笔记",
        "---",
        "",
    ],
}


def _build(split: str, templates: dict[str, list[Template]], n: int, rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    for family, temps in templates.items():
        for ti, template in enumerate(temps):
            for k in range(n):
                g = Gen(rng)
                body = template(g)
                if rng.random() < 0.5:  # some snippets sit between filler lines
                    body = f"{rng.choice(FILLER[split])}\n{body}\n{rng.choice(FILLER[split])}"
                text, spans = unmark(body)
                lang = "zh" if re.search(r"[\u4e00-\u9fff]", text) else "en"
                cases.append(Case(f"{split}/{family}/{ti}/{k}", split, family, lang, text, spans))
    return cases


def build_corpus(seed: int = 13, per_template: int = 6) -> list[Case]:
    """Every case of every split; the same list for the same arguments."""
    rng = random.Random(seed)
    cases: list[Case] = []
    splits = (
        ("tune", TUNE_POS, TUNE_NEG),
        ("heldout", HELDOUT_POS, HELDOUT_NEG),
        ("fresh", FRESH_POS, FRESH_NEG),
    )
    for split, pos, neg in splits:
        cases += _build(split, pos, per_template, rng)
        cases += _build(split, neg, per_template, rng)
    return cases


POSITIVE_FAMILIES = tuple(TUNE_POS)
NEGATIVE_FAMILIES = tuple(TUNE_NEG)


def realistic_note(size: int, seed: int = 0) -> str:
    """A long note (``size`` bytes or a little more) of the kind the redactor reads: Chinese prose,
    commands, code and config, links, with a credential snippet now and then."""
    rng = random.Random(seed)
    corpus = build_corpus(seed=seed, per_template=2)
    positives = [c.text for c in corpus if c.positive]
    negatives = [c.text for c in corpus if not c.positive]
    prose = [
        "检索增强生成把检索到的段落放进提示词里，模型再根据段落回答。BMX 在 BM25 的基础上加了熵加权。",
        "今天把 ollama 升级到新版本，`ollama ps` 能看到模型是否在 GPU 上运行，默认监听 11434 端口。",
        "The embedding model runs on CPU at about 40 passages per second; batch size matters less than length.",
        "```python\nfrom pathlib import Path\nfor p in Path('notes').rglob('*.md'):\n    print(p, p.stat().st_size)\n```",
        "```yaml\nservices:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n```",
        "- [CSDN 教程](https://blog.csdn.net/qq_4211/article/details/13579) \n- [知乎](https://zhuanlan.zhihu.com/p/6021)",
    ]
    parts: list[str] = []
    total = 0
    while total < size:
        x = rng.random()
        part = rng.choice(positives) if x < 0.03 else rng.choice(negatives) if x < 0.35 else rng.choice(prose)
        parts.append(part + "\n\n")
        total += len(part.encode()) + 2
    return "".join(parts)


if __name__ == "__main__":  # python -m tests.secrets_corpus > corpus.jsonl, to read the cases
    for c in build_corpus():
        sys.stdout.write(
            json.dumps(
                {
                    "id": c.id,
                    "split": c.split,
                    "family": c.family,
                    "lang": c.lang,
                    "text": c.text,
                    "secrets": c.values(),
                },
                ensure_ascii=False,
            )
            + "\n"
        )
