"""Secret redaction: what is caught, what is left alone, exact spans, counts, idempotence, linear time.

Every secret below is made up. Provider prefixes are split (``"sk" + "-"``) so that the file itself does
not look like a leaked credential to secret scanners.
"""

from __future__ import annotations

import itertools
import random
import re
import string
import time
from collections import Counter

import pytest

from ingest.secrets import PLACEHOLDER, REDACTOR_VERSION, find_secrets, redact
from tests.secrets_corpus import build_corpus, unmark

# -- made-up secrets ---------------------------------------------------------------------------------------

SK = "sk" + "-"
OPENAI = SK + "Qm3x9Kp2Lz7Vr4Tn8Wb1Yc6Hf5Js0GdAeUo2Ri7SkT1"
OPENAI_PROJ = SK + "proj-" + "Xq7mK2pL9vR4tW8zN3bJ6cF1hD5gS0aY-uE7iO2kQ9wT4rP_b8Hn3Vz"
ANTHROPIC = (
    SK + "ant-" + "api03-Zr8Kp2Lm9Xq4Vn7Bt3Wc6Hy1Jd5Fs0Ga-Qe8Ru2Io7Pk4Tm9Lx3Nb6Vc1Zd5Ws0Yh2Jf8Ka-Bx7CmAA"
)
GITHUB = "gh" + "p_" + "4fK9xQ2mZ7pL3vR8tW1nB6cY5hD0sJ9gA2eU"
GITHUB_PAT = "github" + "_pat_" + "11AZQ7XKY0kP3mL9vR2tW8_nB6cY5hD0sJ9gA2eUq7Lm4Vp8Zr1Tn6Wb3Yc5Hf0Js2Gk9Xq"
HF = "hf" + "_" + "kQ8xZ2mP7vL3nR9tW4bC6yH1dF5sJ0gAeUq"
SLACK = "xo" + "xb-" + "2048123456789-4096123456789-Ab3Cd5Ef7Gh9Ij1Kl3Mn5Op7"
SLACK_HOOK_PATH = "T01QZ7XK2" + "/B02HM4PL9R/" + "xY7kQ2mL9vP4zR8tN1wB6cH5"
GOOGLE = "AI" + "za" + "SyD3x9Kq2Lm7Vp4Zr8Tn1Wb6Yc5Hf0Js2Gk"
AWS_ID = "AK" + "IA" + "Z7Q2M4X9P3L8V6TN"
AWS_SECRET = "k9Xq2Lm7Vp4Zr8Tn1Wb6Yc5Hf0Js2GkA3eUo7Ri9"
STRIPE = "sk" + "_live_" + "51Hq8Xz2Lm7Vp4Zr8Tn1Wb6Yc5Hf"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiI0MjQyIiwibmFtZSI6IkZha2UgVXNlciJ9"
    ".Qm3x9Kp2Lz7Vr4Tn8Wb1Yc6Hf5Js0GdAeUo2Ri7Sk"
)
HEX32 = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
B62 = "Zk8Lp2Mq9Xr4Vn7Bt3Wc6Hy1Jd5Fs0Ga"
BEGIN = "-----BEGIN "
PK = "PRIVATE" + " KEY-----"
OPENSSH_KEY = (
    f"{BEGIN}OPENSSH {PK}\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBmYWtlZmFrZWZha2VmYWtlZmFrZWZha2VmYWtlZmFrZQAAAJhmYWtl\n"
    f"-----END OPENSSH {PK}"
)
RSA_CUT = f"{BEGIN}RSA {PK}\nMIIEpAIBAAKCAQEAx7Kq2Lm9Vp4Zr8Tn1Wb6Yc5Hf0Js2GkA3eUo7Ri9Qw\nQWxhZGRpbjEy"
PGP_KEY = (
    f"{BEGIN}PGP {PK.replace('KEY-----', 'KEY BLOCK-----')}\n"
    "Version: GnuPG v2\n\n"
    "lQOYBF1x2y8BCAC9k3mZ7pQ2vL8tR4wN6bJ1cF5hD0sG9aYeUqX3\n=Xk9p\n"
    f"-----END PGP {PK.replace('KEY-----', 'KEY BLOCK-----')}"
)

# -- positive cases ----------------------------------------------------------------------------------------
# «...» marks each secret; the kinds name the placeholder each one becomes, in order.

MARK = re.compile(r"«(.*?)»", re.DOTALL)

POSITIVE: list[tuple[str, str, tuple[str, ...]]] = [
    ("env-openai", f"OPENAI_API_KEY=«{OPENAI_PROJ}»\n", ("openai_key",)),
    ("export-anthropic", f'export ANTHROPIC_API_KEY="«{ANTHROPIC}»"', ("anthropic_key",)),
    ("py-client", f'client = OpenAI(api_key="«{OPENAI}»")  # 临时测试', ("openai_key",)),
    (
        "git-clone-token",
        f"git clone https://x-access-token:«{GITHUB}»@github.com/me/repo.git",
        ("github_token",),
    ),
    ("github-pat-yaml", f"  token: «{GITHUB_PAT}»\n  repo: me/notes", ("github_token",)),
    ("hf-export", f"```bash\nexport HF_TOKEN=«{HF}»\nhuggingface-cli whoami\n```", ("huggingface_token",)),
    ("slack-compose", f"    environment:\n      SLACK_BOT_TOKEN: «{SLACK}»\n", ("slack_token",)),
    (
        "slack-webhook",
        f"curl -X POST https://hooks.slack.com/services/«{SLACK_HOOK_PATH}» -d @msg.json",
        ("slack_webhook",),
    ),
    (
        "google-url",
        f"GET https://maps.googleapis.com/maps/api/geocode/json?address=北京&key=«{GOOGLE}»",
        ("google_api_key",),
    ),
    (
        "aws-credentials",
        f"[default]\naws_access_key_id = «{AWS_ID}»\n"
        f"aws_secret_access_key = «{AWS_SECRET}»\nregion = us-east-1",
        ("aws_access_key_id", "aws_secret_key"),
    ),
    ("stripe", f'stripe.api_key = "«{STRIPE}»"', ("stripe_key",)),
    ("curl-bearer-jwt", f'curl https://api.example.com/me -H "Authorization: Bearer «{JWT}»"', ("jwt",)),
    (
        "curl-token-header",
        f'curl -H "Authorization: token «{HEX32}»" https://api.example.com',
        ("bearer_token",),
    ),
    ("bearer-fstring", f'headers = {{"Authorization": f"Bearer «{B62}»"}}', ("bearer_token",)),
    ("basic-auth", "Authorization: Basic «YWRtaW46UzNjcjN0UGFzcw==»", ("basic_auth",)),
    ("json-api-key", f'{{\n  "api_key": "«{HEX32}»",\n  "model": "gpt-4o-mini"\n}}', ("api_key",)),
    (
        "anthropic-header",
        f'-H "x-api-key: «{ANTHROPIC}»" -H "anthropic-version: 2023-06-01"',
        ("anthropic_key",),
    ),
    ("env-client-secret", f"client_secret: «{B62}»\nclient_id: notes-app", ("secret",)),
    ("env-jwt-secret", f'JWT_SECRET="«{B62}»"', ("secret",)),
    ("flag-token", "python sync.py --token «ab12Cd34Ef56Gh78Ij90Kl12» --dry-run", ("token",)),
    (
        "docker-e-password",
        "docker run -d -e MYSQL_ROOT_PASSWORD=«Tr0ub4dor3» -p 3306:3306 mysql:8",
        ("password",),
    ),
    (
        "compose-list",
        "services:\n  db:\n    environment:\n"
        "      - POSTGRES_PASSWORD=«Pg_Adm1n_2024»\n      - POSTGRES_USER=app\n",
        ("password",),
    ),
    (
        "compose-map",
        "    environment:\n      MYSQL_PASSWORD: «r00tP@ss»\n      MYSQL_DATABASE: notes\n",
        ("password",),
    ),
    ("url-creds", 'psql "postgresql://app:«S3cr3t!pw»@db.internal:5432/app"', ("password",)),
    ("url-creds-no-user", "redis_url: redis://:«Sup3rRedis»@cache:6379/0", ("password",)),
    ("pgpassword", "PGPASSWORD=«pa55w0rd» psql -h localhost -U postgres", ("password",)),
    ("short-literal", "DB_PASSWORD=«123456»", ("password",)),
    ("py-kwarg", 'conn = pymysql.connect(host="10.0.0.8", user="root", password="«R00t!pw»")', ("password",)),
    ("yaml-passwd", "passwd: «Tr1cky_pass»", ("password",)),
    ("pwd", "pwd=«qwe123ZX»", ("password",)),
    ("flag-password-eq", "mysqldump --user=root --password=«S0meP4ss» notes > dump.sql", ("password",)),
    ("flag-password-space", "docker login -u me --password «dckr_Xy7Kq2Lm9Vp4»", ("password",)),
    ("mysql-p", "mysql -uroot -p«MyP4ssw0rd» -h 127.0.0.1", ("password",)),
    ("mysql-p-quoted", "sudo mysql -u root -p'«My$ecret»' -e \"show databases\"", ("password",)),
    ("sshpass", "sshpass -p '«Zx9#kL2m»' ssh root@10.0.0.2", ("password",)),
    ("curl-u", "curl -u admin:«Adm1nPass» https://nexus.local/service/rest", ("password",)),
    ("xml", "<server>\n  <id>nexus</id>\n  <password>«Sup3rS3cret»</password>\n</server>", ("password",)),
    ("zh-shi", "数据库密码是 «Qw3rty!23»，用户名 root", ("password",)),
    ("zh-colon", "服务器密码：«abc123456»\n", ("password",)),
    ("zh-wei", "登录密码为 «Adm1n888» （测试环境）", ("password",)),
    ("zh-quoted", 'wifi 密码是 "«homenet2024»"', ("password",)),
    ("zh-bold-code", "**密码**：`«Ab12cd34»`", ("password",)),
    ("zh-kouling", "口令=«secretPw77»", ("password",)),
    ("en-colon-then-zh", "password: «abc123»，然后登录", ("password",)),
    ("parens-in-password", "password: «P@ss(w0rd)»", ("password",)),
    ("powershell", f'$env:OPENAI_API_KEY="«{OPENAI}»"', ("openai_key",)),
    ("npmrc", f"//registry.npmjs.org/:_authToken=«npm_{B62}»", ("token",)),
    ("openssh-key", f"```\n«{OPENSSH_KEY}»\n```\n上面是测试机的私钥", ("private_key",)),
    ("rsa-key-cut", f"«{RSA_CUT}»\n(后面省略)", ("private_key",)),
    ("pgp-key", f"«{PGP_KEY}»", ("private_key",)),
    ("query-password", "jdbc:mysql://db:3306/app?user=root&password=«Xk9!pQ2m»&useSSL=false", ("password",)),
    ("redis-cli", "redis-cli -h 10.0.0.5 -p 6379 -a '«R3dis!pw»' ping", ("password",)),
    ("zh-adjacent", f"OpenAI 的密钥«{OPENAI_PROJ}»你好", ("openai_key",)),
    ("bang-password", "PASSWORD=«!QAZ2wsx»", ("password",)),
    ("zh-miyao", f"阿里云 AccessKey 密钥：«{B62}»（只读）", ("api_key",)),
    ("app-secret", f"AppSecret: «{HEX32}»\nAppId: wx1234", ("secret",)),
    (
        "gcp-json",
        f'{{"private_key_id": "{HEX32}", "private_key": "«{BEGIN}{PK}\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC'
        f'\\n-----END {PK}»\\n", "client_email": "bot@proj.iam.gserviceaccount.com"}}',
        ("private_key",),
    ),
    # -- credentials marked only by their context (label and spaces, login command, section, table) --
    (
        "minio-spaces",
        "Access Key  «Q3AM3UQ867SPQQA43P2F»\nSecret Key  «zuf+tfteSlswRu7BJ86wekitnifILbZam1KYY3TG»",
        ("api_key", "api_key"),
    ),
    ("minio-tab-camel", "AccessKey\t«Q3AM3UQ867SPQQA43P2F»", ("api_key",)),
    ("minio-table", "| Secret Key | «zuf+tfteSlswRu7BJ86wekitnifILbZam1KYY3TG» |", ("api_key",)),
    ("en-password-space", "测试库 password «123456»，不要外传", ("password",)),
    ("en-password-upper", "PASSWORD   «Tr0ub4dor&3»", ("password",)),
    ("en-pass-comma", "default login admin, pass «88888888»", ("password",)),
    ("zh-login-space", "登录密码 «Abc#2023@pro»", ("password",)),
    ("zh-product-space", "Grafana 密码 «Zk8Lp2Mq9Xr4Vn7B»", ("password",)),
    ("zh-fullwidth-space", "数据库密码\u3000«Qwer1234!»", ("password",)),
    ("zh-corner-quotes", "初始密码「«P@ssw0rd2024»」，首次登录后修改", ("password",)),
    ("zh-no-separator", "root密码«Admin@123»", ("password",)),
    ("zh-then-label", "密码 «Adm1n888» 用户名 admin", ("password",)),
    (
        "ssh-hosts-in-a-row",
        "ssh -p 30889 root@10.8.0.12\n\n«K8m#pQ2zLx9w»\n\nssh -p 30890 root@10.8.0.13\n\n«x6vmSqS3TYLr»\n",
        ("password", "password"),
    ),
    ("ssh-port-after", "ssh root@gpu-node03.lab.internal -p 2222\n«uzGfRES3@hANDK»", ("password",)),
    ("mysql-prompt-next-line", "mysql -h 10.0.0.8 -u root -p\n«Admin888!pro»", ("password",)),
    ("docker-login-next-line", "docker login registry.example.cn -u admin\n«9y!wiGrt^^B2»", ("password",)),
    ("su-next-line", "su - root\n«123456»", ("password",)),
    ("user-then-token", "用户名：admin\n«Xk29#mmq»", ("password",)),
    ("account-then-bullet", "账号 zhangsan\n- «pass_123pro»", ("password",)),
    ("password-label-alone", "密码：\n«qwe123»", ("password",)),
    ("section-pairs", "## 账号密码\n\nadmin  «Abc#2023»\nroot / «R00t!pw»\n", ("password", "password")),
    ("section-bold", "**用户名密码**\ndev：«Dev@2024»", ("password",)),
    (
        "table-password-column",
        "| 主机 | 用户 | 密码 |\n|---|---|---|\n| 10.0.0.3 | root | «Abc#123» |\n| 10.0.0.4 | ops | «123456» |",
        ("password", "password"),
    ),
    ("docker-login-p", "docker login -u admin -p «dckr2024Xy» registry.example.cn", ("password",)),
    ("mongo-p", "mongo -u admin -p «M0ngo!pw» --authenticationDatabase admin", ("password",)),
    ("lftp-u", "lftp -u ops,«Ft9#pass» sftp://10.0.0.9", ("password",)),
    (
        "mc-alias",
        "mc alias set minio http://10.0.0.5:9000 «Q3AM3UQ867SPQQA43P2F» «zuf+tfteSlswRu7BJ86wekitnifILbZam1KYY3TG»",
        ("api_key", "api_key"),
    ),
    ("htpasswd", "htpasswd -bc /etc/nginx/.htpasswd admin «Ng1nx#pw»", ("password",)),
    ("pgpass", "db.internal:5432:*:postgres:«Pg#2024x»", ("password",)),
    ("gitlab", "«glpat-Ljz4rxeSqefY8YWecaAF»", ("gitlab_token",)),
    ("zh-adverb", "初始密码均为 «Qaz@2023»", ("password",)),
    ("en-password-is", "admin password is «Qaz!QAZ2020»", ("password",)),
    ("access-key-id", "AccessKey ID   «LTAI5tQ2mX9pL3vR8tW1nB6c»", ("api_key",)),
    ("user-and-password-one-line", "账号：deploy\t«Dp#2024ok»", ("password",)),
    ("section-service-label", "# 各平台账号\n- 阿里云：ops / «Ali#2024x»", ("password",)),
    (
        "table-short-rule",
        "| IP | 账号 | 密码 |\n|:--|:--|:--|\n| 10.0.0.3 | root | «R00t#pw» |",
        ("password",),
    ),
    ("redis-requirepass", "requirepass «a702895»", ("password",)),
    ("url-raw-hash", "mongodb://admin:«Jx_d+Skt3b#l»@10.0.0.7:27017/?authSource=admin", ("password",)),
    (
        "docker-e-password-percent",
        "docker run -e MYSQL_ROOT_PASSWORD=«%+Cw+5Ta.eTZWZ*W» mysql:8",
        ("password",),
    ),
]


def _unmark(marked: str) -> tuple[str, str, list[str]]:
    """(input text, expected output, the secrets) for a marked case."""
    secrets = MARK.findall(marked)
    return MARK.sub(r"\1", marked), marked, secrets


def _expected(marked: str, kinds: tuple[str, ...]) -> str:
    it = iter(kinds)
    return MARK.sub(lambda _m: PLACEHOLDER.format(kind=next(it)), marked)


def test_enough_cases() -> None:
    assert len(POSITIVE) >= 30
    assert len(NEGATIVE) >= 20


@pytest.mark.parametrize(("marked", "kinds"), [(m, k) for _, m, k in POSITIVE], ids=[c[0] for c in POSITIVE])
def test_positive_exact_span_kind_and_count(marked: str, kinds: tuple[str, ...]) -> None:
    text, _, secrets = _unmark(marked)
    assert len(secrets) == len(kinds)
    out, counts = redact(text)
    assert out == _expected(marked, kinds)  # only the values changed, everything around them is intact
    assert counts == dict(Counter(kinds))
    for secret in secrets:
        assert secret not in out
    assert redact(out) == (out, {})  # idempotent


# -- negative cases ----------------------------------------------------------------------------------------

NEGATIVE: list[str] = [
    "设置 password 的方法：进入账户页面，点击修改密码。",
    "The password field is required.",
    "password: <your password>",
    "PASSWORD=${DB_PASSWORD}",
    "PASSWORD=$DB_PASSWORD",
    'password: "********"',
    "password=xxx",
    'api_key = "YOUR_API_KEY"',
    "password: changeme",
    'api_key=os.environ["OPENAI_API_KEY"]',
    "client = OpenAI(api_key=args.key)",
    'api_key = os.getenv("OPENAI_API_KEY")',
    "api_key = api_key or settings.openai_api_key",
    "pip install scikit-learn  # 也叫 sk-learn，或 sk-learn-contrib-lightning-0",
    "commit 3f9a8c2b7d1e4f6a9b0c5d2e8f1a7b3c4d5e6f70\nMerge: 1a2b3c4 5d6e7f8",
    "docker pull ollama/ollama@sha256:4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f",
    "request_id: 123e4567-e89b-12d3-a456-426614174000",
    "![img](data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==)",
    'tokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen2.5-7B-Instruct")',
    "max_tokens: 4096\ntemperature: 0.2",
    "id = Column(Integer, primary_key=True)",
    "      - key: kubernetes.io/hostname\n        operator: In",
    "key: ${{ runner.os }}-pip-${{ hashFiles('**/requirements.txt') }}",
    "token: ${{ secrets.GITHUB_TOKEN }}",
    "密码长度至少 8 位，密码为 8-16 位字母和数字",
    "忘记密码怎么办？密码是否需要定期修改",
    "Password: see the team wiki for the current one",
    'password = getpass.getpass("Password: ")',
    "password: str\nremember: bool = False",
    "password: Optional[str] = None",
    "user = User(username=name, password=hashed_password)",
    "const password = req.body.password;",
    "cat token.txt | docker login --password-stdin",
    "docker run -p 8080:80 nginx && ssh -p 2222 user@host",
    "mkdir -p ~/.ssh && chmod 700 ~/.ssh",
    "git@github.com:me/repo.git and http://localhost:8080/api",
    "public_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyFakeKeyFakeKeyFakeKeyFakeKeyFake me@laptop",
    "Bearer tokens are sent in the Authorization header.",
    "Authorization: Bearer <token>",
    '-H "Authorization: Bearer $TOKEN"',
    'headers = {"Authorization": f"Bearer {api_key}"}',
    "Basic auth is simpler than OAuth.",
    "PWD=/home/me/projects\nOLDPWD=/home/me",
    "docker run -u 1000:1000 image && git push -u origin main",
    "使用 mysql 时，-p 参数表示 password",
    'password=None\n"password": null,',
    "api_key: sk-...",
    "OPENAI_API_KEY=" + SK + "x" * 32,
    "gh" + "p_" + "X" * 36,
    "AK" + "IA" + "X" * 16,
    "token_type: bearer",
    "secret_name: my-app-tls",
    "key_file: /etc/ssl/private/server2024.key",
    "password_min_length: 8",
    "api_password: !secret http_password",
    "items.sort(key=lambda x: x[1])",
    "- MYSQL_ALLOW_EMPTY_PASSWORD=yes",
    "password：设置方法见下文",
    "token：每个 token 大约 0.75 个英文单词",
    f"{BEGIN}RSA {PK}\n...\n-----END RSA {PK}",
    f"文件以 `{BEGIN}OPENSSH {PK}` 开头",
    "password: must contain digits and letters",
    'if password == "letmein":',
    "PASSWORD_FILE=/run/secrets/db_password",
    'hf_hub_download(repo_id="x/y", filename="a.bin", token=True)',
    "monkey=banana123banana",
    "密钥：在控制台的「安全设置」里生成，令牌: 每小时刷新一次",
    "gpg --recv-key 3AA5C34371567BD2",
    '"password": "Password is required",\n"passwordHint": "至少 8 位"',
    # -- strings people search for, next to the context rules --
    "docker start 7aa4b3c2d1e0 && docker exec -it 7aa4b3c2d1e0 bash",
    "docker commit 4f2c9a1b8e7d0c3f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f myimage:v2",
    "git cherry-pick 3f9a8c2b7d1e4f6a9b0c5d2e8f1a7b3c4d5e6f70",
    "sha256sum model.gguf\n9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  model.gguf",
    "ollama run qwen2.5:7b-instruct\nollama pull bge-m3\nLlama-3-8B 需要 16G 显存",
    "http://10.0.0.5:11434/v1/chat/completions，端口 11434，版本 0.6.3",
    "pip install -U vllm==0.6.3 -i https://pypi.tuna.tsinghua.edu.cn/simple\nconda activate py310",
    "ssh -p 30889 root@10.8.0.12\n\nnvidia-smi\n\ncd /data/models",
    "ssh root@10.8.0.12\npython3",
    "ssh root@10.8.0.12 -p 2222\nhtop",
    "mysql -h 10.0.0.8 -u root -p\nshow databases;",
    "用户名：admin\n登录后先改密码。",
    "## 账号密码\n\n账号密码统一放在公司的密码管理器里，这里不记录。",
    "### Accounts\n\nsee wiki\n",
    "password reset\npassword manager",
    "The password must contain 8 characters.",
    "修改 root 密码用 passwd 命令，密码 MD5 加密后存储。",
    "color: #1f2937; request_id: 123e4567-e89b-42d3-a456-426614174000",
    "caBundle: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=",
    "| 模型 | key | 说明 |\n|---|---|---|\n| bge-m3 | embed | 向量 |",
    "token 4096 个，secret sauce",
    "Access Key ID 在控制台里创建",
    "aa:bb:cc:dd:ee:ff\n12:30:45:00:11",
    "密码有效期为 180 天，密码最小长度为 8",
    "mc alias set minio http://10.0.0.5:9000 $ACCESS_KEY $SECRET_KEY",
    "ssh root@10.0.0.2\nsudo systemctl restart ollama\nexit",
    "ssh root@10.0.0.2\n7aa4b3c2d1e0\n\n用户名：admin\n3f9a8c2b7d1e4f6a9b0c5d2e8f1a7b3c4d5e6f70",
]


@pytest.mark.parametrize("text", NEGATIVE)
def test_negative_left_alone(text: str) -> None:
    assert redact(text) == (text, {})


def test_empty_and_plain_text() -> None:
    assert redact("") == ("", {})
    plain = "# 笔记\n\n检索增强生成把段落放进提示词里。\n"
    assert redact(plain) == (plain, {})


# -- a whole note ------------------------------------------------------------------------------------------

NOTE = f"""# 部署笔记 2024-05

先配置 `.env`：

```dotenv
OPENAI_API_KEY=«{OPENAI}»
HF_TOKEN=«{HF}»
DB_PASSWORD=«hunter22»
DB_HOST=db
```

docker-compose.yml 里：

```yaml
services:
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: ${{DB_PASSWORD}}
  app:
    environment:
      - DATABASE_URL=postgres://app:«pg_S3cret»@db:5432/app
      - GITHUB_TOKEN=«{GITHUB}»
```

测试调用：

```bash
curl https://api.example.com/v1/chat -H "Authorization: Bearer «{JWT}»" -d '{{"q": "你好"}}'
```

跳板机密码：«Jump!2024»，记得每季度改一次。password 字段不能为空。
"""


def test_whole_note_counts_and_surroundings() -> None:
    text, _, secrets = _unmark(NOTE)
    kinds = ("openai_key", "huggingface_token", "password", "password", "github_token", "jwt", "password")
    out, counts = redact(text)
    assert counts == {"openai_key": 1, "huggingface_token": 1, "password": 3, "github_token": 1, "jwt": 1}
    assert out == _expected(NOTE, kinds)
    assert not any(s in out for s in secrets)
    assert "POSTGRES_PASSWORD: ${DB_PASSWORD}" in out and "password 字段不能为空" in out
    again, more = redact(out)
    assert (again, more) == (out, {})


def test_tie_prefers_the_specific_kind_and_nested_matches_count_once() -> None:
    # the generic "*_KEY=" rule and the OpenAI shape cover the same span: one redaction, the specific kind
    assert redact(f"MY_KEY={OPENAI}") == (
        f"MY_KEY={PLACEHOLDER.format(kind='openai_key')}",
        {"openai_key": 1},
    )
    # a token inside a private key block is part of the block
    block = f"{BEGIN}{PK}\n{AWS_ID}{HEX32}\n{B62}\n-----END {PK}"
    assert redact(block) == (PLACEHOLDER.format(kind="private_key"), {"private_key": 1})


def test_generic_key_names_catch_random_values_of_every_alphabet() -> None:
    """Machine-made values assigned to a key name are redacted whatever their alphabet (seeded, so exact)."""
    rng = random.Random(7)
    alphabets = [
        string.ascii_letters + string.digits,
        "0123456789abcdef",
        string.ascii_lowercase + string.digits,
        string.ascii_uppercase + "234567",
        string.ascii_letters + string.digits + "+/",
    ]
    missed = 0
    for i in range(1000):
        alphabet = alphabets[i % len(alphabets)]
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(20, 48)))
        if not any(c.isdigit() for c in value):
            value += "7"
        out, _ = redact(f"SERVICE_API_KEY={value}\n")
        missed += value in out
    assert missed <= 10, missed


# -- linear time -------------------------------------------------------------------------------------------

ADVERSARIAL = [
    "a",
    "key=",
    "password: ",
    f"{BEGIN}{PK}",
    "://a:",
    "eyJaaaaaaaaa.",
    SK,
    "a-",
    "mysql -pa ",
    "curl -u a:b ",
    "--password ",
    "密码：",
    "<password>",
    "Authorization: ",
    "Bearer ",
    'password="',
    "keykeykey",
    "secret_",
    "@",
    "(",
    "Access Key ",
    "password \u3000",
    "登录密码 ",
    "| pwd ",
    "-p a ",
    "lftp -u a,",
]

# Line-shaped fragments for the context rules (login lines, labels, sections, tables), each repeated to
# ~100 KB as many short lines.
ADVERSARIAL_LINES = [
    "ssh -p 22 root@h\n",
    "用户名：a\n",
    "密码：\n",
    "## 账号密码\n",
    "| 用户 | 密码 |\n|---|---|\n",
    "a b\n",
    "| x |\n",
    "\n",
]


def test_two_megabyte_adversarial_line_is_fast() -> None:
    """Each fragment repeated to ~100 KB, all on one 2 MB line: a super-linear pattern would take minutes."""
    line = "".join(frag * (100_000 // len(frag)) for frag in ADVERSARIAL)
    assert "\n" not in line and len(line) >= 1_900_000
    key_lines = f"{BEGIN}{PK}\nQUFBQUFBQUFBQUFB" * 5_000  # truncated key blocks, one after another
    t0 = time.perf_counter()
    redact(line + "\n" + key_lines)
    assert time.perf_counter() - t0 < 20


def _generated_notes(size: int, seed: int = 0) -> tuple[str, list[str]]:
    """Markdown notes (Chinese prose, YAML, code, shell) with a few planted secrets; (text, secrets)."""
    rng = random.Random(seed)
    paras = [
        "# Docker 部署笔记\n\n用 `docker compose up -d` 启动服务，`docker logs -f app` 看日志。\n",
        "```yaml\nservices:\n  db:\n    environment:\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n```\n",
        "检索增强生成把检索到的段落放进提示词里，模型再根据段落回答。BM25 与向量检索各有优缺点。\n",
        '```python\nclient = OpenAI(api_key=os.environ["OPENAI_API_KEY"])\nchat(max_tokens=512)\n```\n',
        "curl -s https://api.example.com/v1/items -H 'Content-Type: application/json' | jq .\n",
        "The password field is required at sign-up; see the key rotation policy in the wiki.\n",
        "commit 3f9a8c2b7d1e4f6a9b0c5d2e8f1a7b3c4d5e6f70\nAuthor: Me <me@example.com>\n",
        "今天在 4090 上用 vLLM 跑 Qwen2.5-7B-Instruct，吞吐约 1500 tokens/s，记得 `--max-model-len 8192`。\n",
    ]
    plants = ["export OPENAI_API_KEY={k}\n", "服务器密码：{p}\n", "mysql -uroot -p{p} -e 'select 1'\n"]
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    parts: list[str] = []
    secrets: list[str] = []
    total = 0
    while total < size:
        if rng.random() < 0.02:
            k = SK + "".join(rng.choice(alphabet) for _ in range(40))
            p = "".join(rng.choice(alphabet) for _ in range(10)) + "7"
            template = rng.choice(plants)
            part = template.format(k=k, p=p)
            secrets.append(k if "{k}" in template else p)
        else:
            part = rng.choice(paras)
        parts.append(part)
        total += len(part.encode())
    return "".join(parts), secrets


def test_generated_notes_lose_every_planted_secret() -> None:
    text, secrets = _generated_notes(300_000)
    out, counts = redact(text)
    assert secrets and all(s not in out for s in secrets)
    assert sum(counts.values()) == len(secrets)


@pytest.mark.slow
def test_throughput_on_ten_megabytes() -> None:
    text, secrets = _generated_notes(10_000_000)
    mb = len(text.encode()) / 1e6
    t0 = time.perf_counter()
    _, counts = redact(text)
    seconds = time.perf_counter() - t0
    print(f"\nredact: {mb:.1f} MB in {seconds:.2f} s = {mb / seconds:.1f} MB/s, {sum(counts.values())} found")
    assert sum(counts.values()) == len(secrets)
    assert mb / seconds > 0.5


@pytest.mark.parametrize(
    "context",
    ["ssh -p 22 root@h\n", "用户名：a\n", "password ", "登录密码 ", "## 账号密码\n", "user", "密码"],
)
def test_long_values_after_a_context_are_fast(context: str) -> None:
    """Values the shape checks read (word runs, spaces, separators) at their longest: no backtracking
    blow-up in the name, version and line patterns."""
    values = [
        "a" * 120 + "!",
        "aB" * 60 + "!",
        "1." * 60 + "x!",
        "a-" * 60 + "!",
        " " * 5000 + "x!",
        "a." * 60 + ":",
    ]
    text = "\n".join(context + v for v in values) + "\n"
    t0 = time.perf_counter()
    for _ in range(3):
        find_secrets(text)
    assert time.perf_counter() - t0 < 2


def test_many_short_lines_of_context_are_fast() -> None:
    """Login lines, labels, headings and table headers in runs of 100 KB: every rule that looks at the
    next lines must stay linear when every line is a trigger."""
    text = "".join(frag * (100_000 // len(frag)) for frag in ADVERSARIAL_LINES)
    text += "| pwd |\n|---|\n" + "| x |\n" * 50_000  # one header, a long table
    t0 = time.perf_counter()
    redact(text)
    assert time.perf_counter() - t0 < 10


# -- find_secrets, the redactor's version ---------------------------------------------------------------------


def test_find_secrets_reports_what_redact_replaces_without_changing_the_text() -> None:
    text = "登录密码 Abc#2023@pro\nssh -p 30889 root@10.8.0.12\n\nK8m#pQ2zLx9w\ndocker start 7aa4b3c2d1e0\n"
    found = find_secrets(text)
    assert [(text[s:e], k) for s, e, k in found] == [
        ("Abc#2023@pro", "password"),
        ("K8m#pQ2zLx9w", "password"),
    ]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(found))  # sorted, not overlapping
    out, counts = redact(text)
    rebuilt = text
    for s, e, k in reversed(found):
        rebuilt = rebuilt[:s] + PLACEHOLDER.format(kind=k) + rebuilt[e:]
    assert out == rebuilt and counts == {"password": 2}
    assert find_secrets(out) == []


def test_redactor_version_is_an_int_of_at_least_two() -> None:
    assert isinstance(REDACTOR_VERSION, int) and REDACTOR_VERSION >= 2


def test_unmark_gives_spans_of_the_marked_values() -> None:
    text, spans = unmark("a «bc» d «e»")
    assert text == "a bc d e" and [text[s:e] for s, e in spans] == ["bc", "e"]


# -- the labelled corpus (tests/secrets_corpus.py; bench/bench_secrets.py reports the figures) ---------------


def _corpus_scores(split: str) -> tuple[float, float, list[str]]:
    """(precision, recall, a few misses) of ``find_secrets`` on one split of the corpus, at span level."""
    caught = total = tp = pred = 0
    misses: list[str] = []
    for case in build_corpus():
        if case.split != split:
            continue
        spans = [(s, e) for s, e, _ in find_secrets(case.text)]
        for s, e in case.secrets:
            total += 1
            ok = any(ps <= s and e <= pe for ps, pe in spans)
            caught += ok
            if not ok and len(misses) < 5:
                misses.append(case.text[s:e])
        pred += len(spans)
        tp += sum(any(ps < e and s < pe for s, e in case.secrets) for ps, pe in spans)
    return tp / pred, caught / total, misses


@pytest.mark.parametrize(("split", "floor"), [("tune", 0.99), ("heldout", 0.95), ("fresh", 0.95)])
def test_corpus_precision_and_recall(split: str, floor: float) -> None:
    precision, recall, misses = _corpus_scores(split)
    assert recall >= floor, misses
    assert precision >= floor
