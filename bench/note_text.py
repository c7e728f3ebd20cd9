"""Synthetic Chinese ML-infra notes for the mojibake benchmark and tests.

Real note folders mix Chinese prose with English terms, shell commands, code,
URLs and lists; clean public benchmarks (Wikipedia paragraphs) have none of
that. ``note_paragraphs(n, seed)`` builds ``n`` deterministic paragraphs from
hand-written sentences about deploying and training models, with the technical
terms drawn at random, and code blocks, commands and links mixed in.
"""

from __future__ import annotations

import random

TERMS = {
    "tool": ["docker", "Ollama", "vLLM", "Qdrant", "FastAPI", "nginx", "Redis", "conda", "uv", "k8s", "tmux"],
    "gpu": ["GPU", "A100", "H100", "RTX 4090", "V100", "T4"],
    "lib": ["PyTorch", "transformers", "DeepSpeed", "accelerate", "peft", "datasets", "jieba", "numpy"],
    "model": ["qwen2.5:7b", "Llama-3-8B", "bge-m3", "e5-small", "ChatGLM3-6B", "Mistral-7B", "SmolLM2"],
    "cmd": [
        "docker ps -a",
        "nvidia-smi",
        "pip install -r requirements.txt",
        "ollama pull qwen2.5:7b",
        "docker compose up -d",
        "conda activate py311",
        "git pull --rebase",
        "python train.py --epochs 3",
        "huggingface-cli download",
        "kubectl get pods -n infer",
    ],
    "url": [
        "https://github.com/ollama/ollama",
        "https://pytorch.org/get-started/locally/",
        "http://localhost:11434/api/tags",
        "https://docs.vllm.ai/en/latest/",
        "https://blog.csdn.net/weixin_4421/article/details/1352",
        "https://zhuanlan.zhihu.com/p/6584",
    ],
    "port": ["11434", "6333", "8000", "8080", "7860", "5432"],
}

SENTENCES = [
    "先用 pip 安装各种modules，再检查 {lib} 的版本是否和 CUDA 对得上。",
    "加载模型之前要确认环境变量 CUDA_VISIBLE_DEVICES 已经设置好。",
    "训练的时候显存不够，可以把 batch size 调小，或者打开梯度检查点。",
    "对于字典类型的返回值，建议先用 json.dumps 打印出来再看。",
    "数据增强以后样本数量翻了一倍，但是验证集上的准确率没有明显提高。",
    "连接数据库失败，多半是密码不对或者端口 {port} 没有开放。",
    "在新的虚拟环境中重新安装依赖，问题就解决了。",
    "这个模型的上下文长度是 8192，超出的部分会被截断。",
    "用 {tool} 启动服务以后，日志里没有报错，但是接口一直返回 502。",
    "{model} 在 {gpu} 上推理速度大约每秒四十个 token。",
    "微调的时候学习率设成 2e-5，训练三个 epoch 就收敛了。",
    "如果 {tool} 提示权限不足，先把当前用户加入 docker 组。",
    "向量数据库里存的是文本块的嵌入，检索时按余弦相似度排序。",
    "关于模型量化，4 bit 的版本效果下降不多，但是显存占用少了一半。",
    "服务器重启以后，容器没有自动拉起来，需要加上 --restart always 参数。",
    "由于网络不稳定，下载权重经常中断，可以改用国内镜像源。",
    "把配置文件挂载到容器里，修改以后不用重新构建镜像。",
    "评估脚本会输出召回率和平均倒数排名，结果写到 results 目录下。",
    "分词用的是 {lib}，专有名词需要加到用户词典里。",
    "函数返回一个列表，列表里的每个元素都是一个字典。",
    "增强检索的效果主要取决于切块的大小和重叠的长度。",
    "连接超时的默认值太短，长文本生成的时候经常断开。",
    "多卡训练要用 torchrun 启动，每张卡一个进程。",
    "环境准备好以后，先跑一个最小的例子确认 {gpu} 能用。",
    "中间结果保存成 parquet 文件，读取速度比 csv 快很多。",
    "注意：{tool} 的默认端口是 {port}，和其他服务冲突时要改掉。",
    "显存占用一直在涨，最后发现是推理时没有关闭梯度计算。",
    "这一步大概需要二十分钟，期间不要关闭终端，可以用 tmux 挂在后台。",
    "官方文档写得比较简略，具体参数可以参考这篇博客。",
    "构建镜像的时候把依赖安装放在前面，利用缓存加快速度。",
    "训练数据里有不少重复样本，去重以后模型的泛化能力更好。",
    "接口返回的格式是 JSON，其中 choices 字段包含生成的文本。",
    "在 Windows 上用 WSL2 跑 {tool}，需要先在设置里启用虚拟化。",
    "模型文件默认下载到用户目录下的缓存文件夹，可以通过环境变量修改位置。",
    "日志级别改成 debug 以后，可以看到每个请求的耗时。",
    "各种报错基本都和版本不匹配有关，先固定依赖的版本号。",
    "用于测试的问题集一共一百条，每条都标注了相关的文档。",
    "对于中文文本，按句号和换行切分比按固定长度切分效果好。",
    "如果返回的结果为空，检查一下索引是否已经建好。",
    "推理服务部署在内网，外部访问需要经过 nginx 反向代理。",
    "数据预处理包括清洗、去重、分词和构建词表四个步骤。",
    "这台机器有两张 {gpu}，每张显存八十 G，够跑七十亿参数的模型。",
    "长时间运行以后内存泄漏，定位到是某个回调函数持有了引用。",
    "把学习率预热的步数设为总步数的百分之五，训练更加稳定。",
    "知乎上有人整理了常见问题的解决办法，链接放在下面。",
    "安装完驱动以后要重启系统，否则 nvidia-smi 会报错。",
    "训练集、验证集和测试集按照八比一比一的比例划分。",
    "权重转换脚本在仓库的 scripts 目录下，运行前先安装依赖。",
    "为了节省时间，嵌入向量计算一次以后缓存到磁盘上。",
    "编码问题导致文件里出现乱码，重新用 UTF-8 保存就好了。",
]


def note_paragraphs(n: int, seed: int = 0) -> list[str]:
    """``n`` note paragraphs: Chinese sentences with terms, commands, code and links mixed in."""
    rng = random.Random(seed)

    def fill(sentence: str) -> str:
        return sentence.format(**{k: rng.choice(v) for k, v in TERMS.items()})

    out = []
    for _ in range(n):
        parts = ["## " + fill(rng.choice(SENTENCES)).rstrip("。")]
        for _ in range(rng.randint(2, 5)):
            kind = rng.random()
            body = "".join(fill(rng.choice(SENTENCES)) for _ in range(rng.randint(1, 3)))
            if kind < 0.25:
                parts.append(
                    f"{body}\n\n```bash\n{rng.choice(TERMS['cmd'])}\n{rng.choice(TERMS['cmd'])}\n```"
                )
            elif kind < 0.45:
                parts.append("\n".join(f"- {fill(rng.choice(SENTENCES))}" for _ in range(rng.randint(2, 4))))
            elif kind < 0.6:
                parts.append(f"{body}参考：{rng.choice(TERMS['url'])}")
            else:
                parts.append(body)
        out.append("\n\n".join(parts))
    return out
