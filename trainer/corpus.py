"""Sample corpus: a seeded generator of segmented Chinese documents.

``python -m trainer.corpus --out DIR --seed 0 [--docs-per-label N]`` writes
``DIR/train.jsonl`` and ``DIR/test.jsonl`` (held-out split), one document per
line: ``{"words": [...], "labels": ["影视"]}``.

Documents mix topic words with shared common and function words; 影视/明星 and
美妆/时尚 share words, some documents carry two labels, a few words of another
topic leak in, and there are negative documents that carry no label: other
topics (sports, food, tech, travel, finance, weather, education, health, cars),
everyday chatter, and text of unknown words. Learnable, but not by a single word.

``general_documents`` and ``unknown_documents`` are evaluation sets kept apart
from any training corpus (own seeds, own vocabulary mix): a training job reports
its false-positive rate on them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
from collections.abc import Iterable, Iterator, Sequence

# The four sample models: model name -> label.
SAMPLE_MODELS: dict[str, str] = {"movie": "影视", "beauty": "美妆", "star": "明星", "fashion": "时尚"}
# The old system's example; 影视 says yes, 美妆 says no.
EXAMPLE_WORDS = ["霸王别姬", "是一部", "非常", "值得", "看的", "电影"]

TOPIC_WORDS: dict[str, list[str]] = {
    "影视": [
        "电影",
        "霸王别姬",
        "导演",
        "剧情",
        "票房",
        "上映",
        "影院",
        "电视剧",
        "剧集",
        "首映",
        "影评",
        "镜头",
        "剪辑",
        "配乐",
        "片场",
        "续集",
        "预告片",
        "院线",
        "纪录片",
        "动画片",
        "喜剧片",
        "科幻片",
        "悬疑片",
        "编剧",
        "剧本",
        "影片",
        "大结局",
        "追剧",
        "豆瓣评分",
        "奥斯卡",
        "金马奖",
        "电影节",
        "男主角",
        "女主角",
        "配角",
        "台词",
        "特效",
        "网剧",
        "收视率",
        "翻拍",
        "原著",
        "改编",
        "拍摄",
        "杀青",
        "定档",
        "贺岁片",
        "大片",
        "银幕",
        "观影",
        "放映",
        "流浪地球",
        "大话西游",
        "无间道",
        "让子弹飞",
        "甄嬛传",
        "琅琊榜",
        "长镜头",
        "叙事",
        "结局",
        "片尾",
        "彩蛋",
        "剧透",
        "影视剧",
        "第一季",
        "番外",
        "片长",
        "分镜",
        "胶片",
    ],
    "美妆": [
        "口红",
        "粉底液",
        "眼影",
        "睫毛膏",
        "眼线笔",
        "腮红",
        "遮瑕",
        "散粉",
        "定妆",
        "卸妆",
        "化妆水",
        "精华",
        "面霜",
        "乳液",
        "面膜",
        "防晒霜",
        "隔离霜",
        "气垫",
        "色号",
        "试色",
        "唇釉",
        "唇膏",
        "眉笔",
        "高光",
        "修容",
        "护肤",
        "补水",
        "保湿",
        "美白",
        "控油",
        "毛孔",
        "痘痘",
        "敏感肌",
        "干皮",
        "油皮",
        "混油",
        "成分",
        "玻尿酸",
        "烟酰胺",
        "化妆品",
        "彩妆",
        "底妆",
        "化妆刷",
        "美妆博主",
        "种草",
        "拔草",
        "平价",
        "专柜",
        "持妆",
        "滋润",
        "水润",
        "哑光",
        "素颜",
        "淡妆",
        "浓妆",
        "眼霜",
        "洁面",
        "爽肤水",
        "黑眼圈",
        "肤色",
        "上脸",
        "质地",
        "卡粉",
        "脱妆",
        "妆效",
    ],
    "明星": [
        "明星",
        "偶像",
        "粉丝",
        "演唱会",
        "歌手",
        "综艺",
        "八卦",
        "绯闻",
        "恋情",
        "经纪人",
        "经纪公司",
        "出道",
        "人气",
        "热搜",
        "微博",
        "爆料",
        "狗仔",
        "应援",
        "签名会",
        "颁奖典礼",
        "顶流",
        "流量",
        "爱豆",
        "新歌",
        "专辑",
        "舞台",
        "官宣",
        "结婚",
        "离婚",
        "工作室",
        "声明",
        "网友",
        "采访",
        "见面会",
        "选秀",
        "成团",
        "练习生",
        "男团",
        "女团",
        "天王",
        "天后",
        "巨星",
        "童星",
        "艺人",
        "娱乐圈",
        "生日会",
        "晒照",
        "合影",
        "同框",
        "路透",
        "塌房",
        "吃瓜",
        "周杰伦",
        "刘德华",
        "王菲",
        "巩俐",
        "歌迷",
        "公开",
        "回应",
        "晒出",
        "综艺节目",
        "真人秀",
        "后援会",
    ],
    "时尚": [
        "时尚",
        "潮流",
        "穿搭",
        "秀场",
        "时装周",
        "设计师",
        "连衣裙",
        "风衣",
        "大衣",
        "西装",
        "牛仔裤",
        "卫衣",
        "衬衫",
        "半身裙",
        "短裙",
        "阔腿裤",
        "高跟鞋",
        "运动鞋",
        "球鞋",
        "靴子",
        "包包",
        "手提包",
        "单品",
        "配饰",
        "项链",
        "耳环",
        "围巾",
        "帽子",
        "墨镜",
        "时装",
        "模特",
        "走秀",
        "杂志",
        "复古",
        "简约",
        "新款",
        "当季",
        "面料",
        "剪裁",
        "廓形",
        "色系",
        "配色",
        "奢侈品",
        "高定",
        "秋冬",
        "春夏",
        "潮牌",
        "联名",
        "限量",
        "显瘦",
        "显高",
        "气质",
        "优雅",
        "休闲",
        "通勤",
        "衣橱",
        "外套",
        "针织衫",
        "格纹",
        "oversize",
        "叠穿",
        "腰带",
        "丝巾",
    ],
    # Negative topics: documents about these carry no label.
    "体育": [
        "比赛",
        "球队",
        "进球",
        "足球",
        "篮球",
        "冠军",
        "联赛",
        "球员",
        "教练",
        "主场",
        "客场",
        "比分",
        "决赛",
        "世界杯",
        "奥运会",
        "金牌",
        "训练",
        "转会",
        "裁判",
        "点球",
        "三分球",
        "季后赛",
        "马拉松",
        "跑步",
        "健身",
        "游泳",
        "乒乓球",
        "羽毛球",
        "赛季",
        "绝杀",
        "防守",
        "进攻",
        "球迷",
        "体育馆",
        "队长",
        "首发",
        "替补",
        "加时赛",
    ],
    "美食": [
        "餐厅",
        "火锅",
        "烧烤",
        "味道",
        "好吃",
        "做法",
        "食材",
        "菜谱",
        "甜点",
        "蛋糕",
        "奶茶",
        "咖啡",
        "小吃",
        "外卖",
        "厨房",
        "炒菜",
        "红烧肉",
        "饺子",
        "面条",
        "米饭",
        "口感",
        "麻辣",
        "香甜",
        "酱料",
        "探店",
        "早餐",
        "晚餐",
        "午饭",
        "牛肉",
        "鸡蛋",
        "蔬菜",
        "水果",
        "厨师",
        "菜单",
        "排队",
        "招牌菜",
        "下饭",
        "烘焙",
        "酸辣",
    ],
    "科技": [
        "手机",
        "电脑",
        "芯片",
        "系统",
        "软件",
        "更新",
        "发布会",
        "屏幕",
        "电池",
        "充电",
        "摄像头",
        "处理器",
        "人工智能",
        "算法",
        "数据",
        "网络",
        "应用",
        "平板",
        "耳机",
        "笔记本",
        "内存",
        "像素",
        "性能",
        "续航",
        "操作系统",
        "程序员",
        "代码",
        "服务器",
        "云计算",
        "机器人",
        "无人机",
        "智能",
        "硬件",
        "快充",
        "折叠屏",
        "卡顿",
        "跑分",
        "测评",
    ],
    "旅游": [
        "旅行",
        "景点",
        "酒店",
        "机票",
        "攻略",
        "自驾",
        "海边",
        "古镇",
        "门票",
        "签证",
        "风景",
        "民宿",
        "出发",
        "行程",
        "打卡",
        "导游",
        "雪山",
        "徒步",
        "高铁",
        "假期",
        "度假",
        "沙滩",
        "博物馆",
        "日出",
        "露营",
        "行李箱",
        "出境游",
        "航班",
        "目的地",
        "夜景",
        "小众",
        "避暑",
        "游客",
        "景区",
        "背包客",
        "路线",
        "网红景点",
        "环球",
    ],
    "财经": [
        "股票",
        "股市",
        "基金",
        "理财",
        "银行",
        "利率",
        "贷款",
        "房价",
        "经济",
        "投资",
        "涨停",
        "跌停",
        "大盘",
        "指数",
        "收益",
        "汇率",
        "人民币",
        "美元",
        "债券",
        "保险",
        "存款",
        "央行",
        "通胀",
        "市值",
        "上市",
        "财报",
        "营收",
        "利润",
        "亏损",
        "融资",
        "股东",
        "分红",
        "牛市",
        "熊市",
        "证券",
        "期货",
        "黄金",
        "工资",
        "税收",
        "市场",
    ],
    "天气": [
        "天气",
        "下雨",
        "晴天",
        "阴天",
        "气温",
        "降温",
        "升温",
        "台风",
        "暴雨",
        "雷阵雨",
        "大风",
        "雾霾",
        "空气质量",
        "湿度",
        "预报",
        "气象台",
        "冷空气",
        "寒潮",
        "高温",
        "闷热",
        "凉爽",
        "雨伞",
        "多云",
        "小雪",
        "大雪",
        "结冰",
        "霜冻",
        "梅雨",
        "降水",
        "紫外线",
        "转晴",
        "暖和",
        "寒冷",
        "刮风",
        "打雷",
        "天气预报",
        "回暖",
        "晴朗",
    ],
    "教育": [
        "学校",
        "老师",
        "学生",
        "考试",
        "作业",
        "高考",
        "考研",
        "成绩",
        "课堂",
        "上课",
        "大学",
        "中学",
        "小学",
        "幼儿园",
        "家长",
        "复习",
        "分数",
        "录取",
        "毕业",
        "论文",
        "教材",
        "辅导班",
        "寒假",
        "暑假",
        "开学",
        "校园",
        "班主任",
        "同学",
        "留学",
        "英语",
        "数学",
        "语文",
        "补课",
        "学费",
        "图书馆",
        "宿舍",
        "专业",
        "报名",
    ],
    "健康": [
        "医院",
        "医生",
        "感冒",
        "发烧",
        "咳嗽",
        "体检",
        "吃药",
        "睡眠",
        "熬夜",
        "锻炼",
        "减肥",
        "血压",
        "血糖",
        "营养",
        "维生素",
        "疫苗",
        "挂号",
        "门诊",
        "手术",
        "护士",
        "头疼",
        "失眠",
        "养生",
        "饮食",
        "喝水",
        "住院",
        "康复",
        "心理",
        "焦虑",
        "过敏",
        "病毒",
        "症状",
        "治疗",
        "药店",
        "中医",
        "牙医",
        "近视",
        "颈椎",
    ],
    "汽车": [
        "汽车",
        "开车",
        "驾照",
        "油耗",
        "新能源车",
        "电动车",
        "充电桩",
        "堵车",
        "停车",
        "车位",
        "加油",
        "保养",
        "发动机",
        "轮胎",
        "车展",
        "试驾",
        "车型",
        "提车",
        "车险",
        "高速",
        "限行",
        "违章",
        "导航",
        "自动驾驶",
        "刹车",
        "变速箱",
        "后备箱",
        "座椅",
        "司机",
        "路况",
        "车主",
        "二手车",
        "修车",
        "洗车",
        "车祸",
        "红绿灯",
    ],
}
LABELS = list(SAMPLE_MODELS.values())
NEGATIVE_TOPICS = [t for t in TOPIC_WORDS if t not in LABELS]

# The general-text evaluation set (see ``general_documents``) is kept apart from the
# training negatives: besides another seed, it draws on words no training document
# has (more of each negative topic, and topics of its own), so its false-positive
# rate says how a model treats text it was not taught to reject.
HELD_OUT_WORDS: dict[str, list[str]] = {
    "体育": [
        "排球",
        "网球",
        "滑雪",
        "田径",
        "射门",
        "扣篮",
        "助攻",
        "球场",
        "运动员",
        "锦标赛",
    ],
    "美食": [
        "包子",
        "馒头",
        "炸鸡",
        "寿司",
        "烤鸭",
        "米线",
        "粥",
        "汤圆",
        "月饼",
        "披萨",
    ],
    "科技": [
        "路由器",
        "蓝牙",
        "固件",
        "显卡",
        "硬盘",
        "键盘",
        "鼠标",
        "编程",
        "开源",
        "5G",
    ],
    "旅游": [
        "护照",
        "游轮",
        "缆车",
        "度假村",
        "自由行",
        "跟团游",
        "登山",
        "温泉",
        "免税店",
        "行李",
    ],
    "财经": [
        "基金经理",
        "降息",
        "加息",
        "板块",
        "港股",
        "美股",
        "理财产品",
        "信用卡",
        "房贷",
        "年化",
    ],
    "天气": [
        "冰雹",
        "沙尘暴",
        "晴转多云",
        "体感温度",
        "积雪",
        "雨季",
        "气压",
        "彩虹",
        "阵雨",
        "低温",
    ],
    "教育": [
        "期末考试",
        "家长会",
        "奖学金",
        "研究生",
        "博士",
        "教室",
        "黑板",
        "课本",
        "作文",
        "学分",
    ],
    "健康": [
        "口罩",
        "退烧药",
        "血常规",
        "针灸",
        "过敏原",
        "胃痛",
        "拉肚子",
        "体温",
        "跑步机",
        "蛋白质",
    ],
    "汽车": [
        "雨刷",
        "方向盘",
        "安全带",
        "油价",
        "车库",
        "交警",
        "摩托车",
        "代驾",
        "高架",
        "收费站",
    ],
}
EVAL_ONLY_TOPICS: dict[str, list[str]] = {
    "家居": [
        "装修",
        "家具",
        "沙发",
        "冰箱",
        "洗衣机",
        "空调",
        "搬家",
        "房租",
        "物业",
        "快递",
        "超市",
        "打扫",
        "做饭",
        "邻居",
        "阳台",
        "厨具",
        "窗帘",
        "床单",
        "垃圾分类",
        "水电费",
    ],
    "职场": [
        "上班",
        "加班",
        "开会",
        "老板",
        "同事",
        "项目",
        "面试",
        "简历",
        "工资条",
        "辞职",
        "跳槽",
        "升职",
        "出差",
        "客户",
        "报告",
        "周报",
        "绩效",
        "年终奖",
        "招聘",
        "实习",
    ],
    "宠物": [
        "猫",
        "狗",
        "猫粮",
        "狗粮",
        "宠物医院",
        "铲屎官",
        "遛狗",
        "猫砂",
        "打针",
        "驱虫",
        "领养",
        "宠物店",
        "小猫",
        "小狗",
        "撸猫",
        "品种",
        "洗澡",
        "绝育",
        "猫咪",
        "狗狗",
    ],
}

# Words two topics share: a document with them alone cannot be told apart.
SHARED_WORDS: dict[str, list[str]] = {
    "影视": [
        "演员",
        "演技",
        "角色",
        "主演",
        "拍戏",
        "剧组",
        "片酬",
        "影帝",
        "影后",
        "张国荣",
        "偶像剧",
        "定妆照",
    ],
    "明星": [
        "演员",
        "演技",
        "角色",
        "主演",
        "拍戏",
        "片酬",
        "影帝",
        "影后",
        "张国荣",
        "红毯",
        "街拍",
        "私服",
        "机场",
        "造型",
        "代言",
        "封面",
    ],
    "美妆": ["妆容", "造型", "搭配", "显白", "品牌", "大牌", "香水", "美甲", "同款", "气色"],
    "时尚": [
        "妆容",
        "造型",
        "搭配",
        "显白",
        "品牌",
        "大牌",
        "香水",
        "美甲",
        "同款",
        "红毯",
        "街拍",
        "私服",
        "封面",
        "代言",
    ],
}
# Which second label a two-label document of each topic may carry.
PARTNERS: dict[str, list[str]] = {
    "影视": ["明星"],
    "明星": ["影视", "时尚", "美妆"],
    "美妆": ["时尚", "明星"],
    "时尚": ["美妆", "明星"],
}
COMMON_WORDS = [
    "是一部",
    "非常",
    "值得",
    "看的",
    "今天",
    "昨天",
    "最近",
    "终于",
    "真的",
    "特别",
    "有点",
    "觉得",
    "喜欢",
    "推荐",
    "分享",
    "大家",
    "我们",
    "自己",
    "朋友",
    "一起",
    "看到",
    "知道",
    "感觉",
    "一个",
    "这个",
    "那个",
    "还是",
    "已经",
    "可以",
    "没有",
    "可能",
    "一定",
    "时候",
    "今年",
    "好看",
    "不错",
    "惊艳",
    "期待",
    "支持",
    "评论",
    "视频",
    "照片",
    "发布",
    "网上",
    "消息",
    "话题",
    "第一次",
    "真是",
    "简直",
    "超级",
    "一下",
    "起来",
    "东西",
    "开始",
    "结束",
    "关注",
    "值得一看",
    "必须",
    "果然",
    "居然",
    "其实",
    "确实",
    "还有",
    "真心",
    "分享给",
    "小伙伴",
    "这次",
    "上次",
    "一直",
    "一样",
    "完全",
    "这么",
]
FUNCTION_WORDS = [
    "的",
    "了",
    "是",
    "在",
    "和",
    "也",
    "都",
    "就",
    "而",
    "但",
    "又",
    "被",
    "把",
    "吧",
    "呢",
    "啊",
    "吗",
    "与",
    "还",
    "让",
    "给",
    "从",
    "对",
    "着",
    "过",
    "这",
    "那",
    "我",
    "你",
    "他",
    "她",
]

# Short phrases a topic tends to repeat; {t} is filled with one of its words.
TEMPLATES: dict[str, list[list[str]]] = {
    "影视": [["{t}", "是一部", "非常", "值得", "看的", "电影"], ["这部", "{t}", "的", "剧情", "{t}"]],
    "美妆": [["这款", "{t}", "非常", "适合", "{t}"], ["{t}", "的", "色号", "很", "显白"]],
    "明星": [["{t}", "在", "微博", "晒出", "{t}"], ["粉丝", "为", "{t}", "应援"]],
    "时尚": [["这件", "{t}", "搭配", "{t}", "很", "{t}"], ["今年", "流行", "{t}", "和", "{t}"]],
}

DEFAULT_DOCS_PER_LABEL = 2000
TEST_FRACTION = 0.15
TWO_LABEL_FRACTION = 0.15
MIN_TOPIC_WORDS = 2
# Negative documents that carry no evidence at all, per label's documents: everyday
# chatter (common and function words only) and text made of words nobody has seen
# (typos, names, other scripts). Without them a model is never shown what "no
# evidence" looks like, and answers it with whatever its padding embedding and
# bias happen to say.
CHATTER_FRACTION = 0.15
UNKNOWN_FRACTION = 0.15
# Seeds of the evaluation sets, far from any corpus seed a user would pick.
GENERAL_EVAL_SEED = 1_000_003
UNKNOWN_EVAL_SEED = 1_000_033
# Pseudo-words: latin letters or CJK characters (U+4E00..U+9FA5) at random, so
# each is (almost surely) seen once: a vocabulary fitted with a minimum count
# leaves it out, as it leaves out an unknown word at serving time.
LATIN = "abcdefghijklmnopqrstuvwxyz"
CJK_FIRST, CJK_LAST = 0x4E00, 0x9FA5


def _zipf_weights(n: int) -> list[float]:
    # Topic words are not equally frequent; a gentle Zipf curve.
    return [1.0 / (rank + 1) ** 0.7 for rank in range(n)]


class _Generator:
    def __init__(
        self, seed: int, topic_words: dict[str, list[str]] | None = None, even: bool = False
    ) -> None:
        self.rng = random.Random(seed)
        self.topic_words = TOPIC_WORDS if topic_words is None else topic_words
        self.weights = {
            t: [1.0] * len(w) if even else _zipf_weights(len(w)) for t, w in self.topic_words.items()
        }

    def topic_word(self, topic: str) -> str:
        return self.rng.choices(self.topic_words[topic], self.weights[topic])[0]

    def clause(self, topics: Sequence[str]) -> list[str]:
        rng = self.rng
        primary = topics[0]
        if primary in TEMPLATES and rng.random() < 0.25:
            template = rng.choice(TEMPLATES[primary])
            return [self.topic_word(primary) if w == "{t}" else w for w in template]
        words = []
        for _ in range(rng.randint(3, 8)):
            r = rng.random()
            if r < 0.36:
                topic = primary if len(topics) == 1 or rng.random() < 0.55 else topics[1]
                words.append(self.topic_word(topic))
            elif r < 0.44 and primary in SHARED_WORDS:
                words.append(rng.choice(SHARED_WORDS[primary]))
            elif r < 0.48:
                # Noise: a word of an unrelated topic.
                words.append(self.topic_word(rng.choice(list(self.topic_words))))
            elif r < 0.74:
                words.append(rng.choice(COMMON_WORDS))
            else:
                words.append(rng.choice(FUNCTION_WORDS))
        return words

    def document(self, topics: Sequence[str]) -> list[str]:
        words: list[str] = []
        for _ in range(self.rng.randint(1, 4)):
            words += self.clause(topics)
        # A document says what it is about at least twice per topic (a short
        # one could otherwise be all common words, unlearnable noise).
        for topic in topics:
            present = set(self.topic_words[topic])
            for _ in range(MIN_TOPIC_WORDS - sum(w in present for w in words)):
                words.insert(self.rng.randint(0, len(words)), self.topic_word(topic))
        return words

    def chatter(self) -> list[str]:
        """Everyday words of no topic: 1 to 8 common and function words."""
        rng = self.rng
        return [
            rng.choice(COMMON_WORDS if rng.random() < 0.5 else FUNCTION_WORDS)
            for _ in range(rng.randint(1, 8))
        ]

    def pseudo_word(self) -> str:
        rng = self.rng
        if rng.random() < 0.5:
            return "".join(rng.choice(LATIN) for _ in range(rng.randint(2, 6)))
        return "".join(chr(rng.randint(CJK_FIRST, CJK_LAST)) for _ in range(rng.randint(1, 3)))

    def unknown(self) -> list[str]:
        """1 to 8 pseudo-words, now and then with a function word among them."""
        rng = self.rng
        words = [self.pseudo_word() for _ in range(rng.randint(1, 8))]
        for _ in range(rng.choice((0, 0, 1, 2))):
            words.insert(rng.randint(0, len(words)), rng.choice(FUNCTION_WORDS))
        return words


def generate(docs_per_label: int = DEFAULT_DOCS_PER_LABEL, seed: int = 0) -> list[dict]:
    """Documents ``{"words": [...], "labels": [...]}`` in a seeded random order.

    Each label is the main topic of ``docs_per_label`` documents (some of which
    carry a second label too); as many again are negative documents of other
    topics (sports, food, tech, travel, finance, weather, education, health,
    cars), and a further ``CHATTER_FRACTION`` and ``UNKNOWN_FRACTION`` of
    ``docs_per_label`` are negative documents without evidence: everyday
    chatter, and pseudo-words.
    """
    gen = _Generator(seed)
    docs = []
    for label in LABELS:
        for _ in range(docs_per_label):
            topics = [label]
            if gen.rng.random() < TWO_LABEL_FRACTION:
                topics.append(gen.rng.choice(PARTNERS[label]))
            docs.append({"words": gen.document(topics), "labels": topics})
    for _ in range(docs_per_label):
        docs.append({"words": gen.document([gen.rng.choice(NEGATIVE_TOPICS)]), "labels": []})
    for _ in range(round(docs_per_label * CHATTER_FRACTION)):
        docs.append({"words": gen.chatter(), "labels": []})
    for _ in range(round(docs_per_label * UNKNOWN_FRACTION)):
        docs.append({"words": gen.unknown(), "labels": []})
    gen.rng.shuffle(docs)
    return docs


def general_documents(count: int, seed: int = GENERAL_EVAL_SEED) -> list[dict]:
    """General text for measuring false positives: ``{"words", "labels": [], "topic"}``.

    Topics none of the sample labels covers, with a vocabulary mix no training
    corpus has: each negative topic's words plus its ``HELD_OUT_WORDS`` (drawn
    evenly), and the ``EVAL_ONLY_TOPICS``; the noise words come from these
    topics only, never from a label's.
    """
    topic_words = {t: TOPIC_WORDS[t] + HELD_OUT_WORDS.get(t, []) for t in NEGATIVE_TOPICS}
    topic_words.update(EVAL_ONLY_TOPICS)
    gen = _Generator(seed, topic_words, even=True)
    topics = list(topic_words)
    return [
        {"words": gen.document([topic]), "labels": [], "topic": topic}
        for topic in (topics[i % len(topics)] for i in range(count))
    ]


def unknown_documents(count: int, seed: int = UNKNOWN_EVAL_SEED) -> list[dict]:
    """Text without a known word (pseudo-words, a stray function word), and lone
    function words: ``{"words", "labels": []}``; no model should label any of it."""
    gen = _Generator(seed)
    docs = [{"words": [w], "labels": []} for w in FUNCTION_WORDS[: count // 4]]
    while len(docs) < count:
        docs.append({"words": gen.unknown(), "labels": []})
    return docs


# -- a synthetic many-label corpus (tests and benchmarks of bundles) ---------------

SYNTHETIC_WORDS_PER_LABEL = 12
SYNTHETIC_MAX_LABELS_PER_DOC = 3


def synthetic_labels(n_labels: int) -> list[str]:
    """The labels of the synthetic corpus: 主题000, 主题001, ..."""
    return [f"主题{j:03d}" for j in range(n_labels)]


def synthetic_vocabulary(
    n_labels: int, words_per_label: int = SYNTHETIC_WORDS_PER_LABEL
) -> dict[str, list[str]]:
    """Each synthetic label's own words (词<label>_<k>), its vocabulary signal."""
    return {
        label: [f"词{j:03d}_{k:02d}" for k in range(words_per_label)]
        for j, label in enumerate(synthetic_labels(n_labels))
    }


def generate_many_labels(
    n_labels: int,
    docs_per_label: int = 50,
    seed: int = 0,
    words_per_label: int = SYNTHETIC_WORDS_PER_LABEL,
) -> list[dict]:
    """A deterministic multi-label corpus of ``n_labels`` labels.

    Each label has its own vocabulary (synthetic_vocabulary); a document
    carries 1..SYNTHETIC_MAX_LABELS_PER_DOC labels (each label is a main label
    of ``docs_per_label`` documents) and says each of them with 2-4 of its
    words, among common and function words and one stray word of an unrelated
    label now and then; a tenth as many documents again carry no label.
    Same arguments, same corpus.
    """
    if n_labels < 1 or docs_per_label < 1:
        raise ValueError("n_labels and docs_per_label must be >= 1")
    rng = random.Random(seed)
    vocabulary = synthetic_vocabulary(n_labels, words_per_label)
    labels = list(vocabulary)
    weights = _zipf_weights(words_per_label)

    def document(carried: Sequence[str]) -> list[str]:
        words: list[str] = []
        for label in carried:
            words += rng.choices(vocabulary[label], weights, k=rng.randint(2, 4))
        for _ in range(rng.randint(3, 8)):
            words.append(rng.choice(COMMON_WORDS) if rng.random() < 0.6 else rng.choice(FUNCTION_WORDS))
        if rng.random() < 0.2:
            words.append(rng.choice(vocabulary[rng.choice(labels)]))
        rng.shuffle(words)
        return words

    docs = []
    for label in labels:
        for _ in range(docs_per_label):
            extra = rng.randint(0, min(SYNTHETIC_MAX_LABELS_PER_DOC, n_labels) - 1)
            carried = [label, *rng.sample([x for x in labels if x != label], extra)] if extra else [label]
            docs.append({"words": document(carried), "labels": carried})
    for _ in range(max(1, n_labels * docs_per_label // 10)):
        docs.append({"words": document([]), "labels": []})
    rng.shuffle(docs)
    return docs


def write_many_label_corpus(
    out_dir: str | pathlib.Path,
    n_labels: int,
    docs_per_label: int = 50,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
) -> tuple[pathlib.Path, pathlib.Path]:
    """generate_many_labels into ``out_dir``/train.jsonl and test.jsonl."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = generate_many_labels(n_labels, docs_per_label, seed)
    n_test = int(round(len(docs) * test_fraction))
    train, test = out / "train.jsonl", out / "test.jsonl"
    write_jsonl(train, docs[n_test:])
    write_jsonl(test, docs[:n_test])
    return train, test


def write_jsonl(path: str | pathlib.Path, docs: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")


def read_jsonl(path: str | pathlib.Path) -> Iterator[dict]:
    """Documents of a corpus file; a malformed line raises ValueError naming it."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                words, labels = doc["words"], doc.get("labels", [])
                if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
                    raise TypeError("words must be a list of strings")
                if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
                    raise TypeError("labels must be a list of strings")
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}:{lineno}: not a corpus line ({e}); expected "
                    '{"words": ["..."], "labels": ["..."]}'
                ) from None
            yield {"words": words, "labels": labels}


def write_corpus(
    out_dir: str | pathlib.Path,
    seed: int = 0,
    docs_per_label: int = DEFAULT_DOCS_PER_LABEL,
    test_fraction: float = TEST_FRACTION,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Generate a corpus into ``out_dir``; returns the (train, test) paths."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = generate(docs_per_label, seed)
    n_test = int(round(len(docs) * test_fraction))
    train, test = out / "train.jsonl", out / "test.jsonl"
    write_jsonl(train, docs[n_test:])
    write_jsonl(test, docs[:n_test])
    return train, test


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs-per-label", type=int, default=DEFAULT_DOCS_PER_LABEL)
    parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION)
    args = parser.parse_args(argv)
    if args.docs_per_label < 1:
        parser.error("--docs-per-label must be >= 1")
    if not 0.0 < args.test_fraction < 1.0:
        parser.error("--test-fraction must be between 0 and 1")
    train, test = write_corpus(args.out, args.seed, args.docs_per_label, args.test_fraction)
    print(f"wrote {train} and {test}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
