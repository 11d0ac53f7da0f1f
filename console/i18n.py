"""The console's words in zh-CN (the default of the Xiamen config) and English: one small dict per language,
rule names and severities included. The pages receive the whole dict of their language."""

from __future__ import annotations

LANGUAGES = ("zh-CN", "en")

# Rule names by the rule types' ids of the shipped rules.yaml; an id not listed is shown as it is.
RULES = {
    "zh-CN": {
        "N-day": "昼间噪声超标", "N-night": "夜间噪声超标", "N-night-max": "夜间最大声级超标",
        "N-prohibited": "禁止施工时段噪声", "N-exam": "考试期间噪声", "N-pre": "噪声预警", "N-data": "噪声数据异常",
        "G-high": "燃气压力高", "G-highhigh": "燃气压力高高", "G-low": "燃气压力低", "G-rupture": "燃气管道破裂",
        "G-leak": "燃气疑似泄漏", "G-flatline": "压力读数不变", "G-range": "传感器量程异常", "Batt": "电池电量低",
        "Offline": "设备离线",
    },
    "en": {
        "N-day": "Daytime noise over limit", "N-night": "Night noise over limit",
        "N-night-max": "Night Lmax over limit",
        "N-prohibited": "Noise in prohibited hours", "N-exam": "Noise during exams", "N-pre": "Noise pre-warning",
        "N-data": "Noise data quality", "G-high": "Gas pressure high", "G-highhigh": "Gas pressure high-high",
        "G-low": "Gas pressure low", "G-rupture": "Gas pipe rupture", "G-leak": "Suspected gas leak",
        "G-flatline": "Pressure reading stuck", "G-range": "Sensor out of range", "Batt": "Battery low",
        "Offline": "Device offline",
    },
}

STRINGS = {
    "zh-CN": {
        "title": "城市运行监测 · 告警看板", "login": "登录", "logout": "退出", "username": "用户名", "password": "密码",
        "login_failed": "用户名或密码错误", "login_limited": "失败次数过多，请 {s} 秒后再试",
        "sev.red": "红色", "sev.orange": "橙色", "sev.yellow": "黄色", "sev.blue": "蓝色",
        "col.severity": "级别", "col.site": "工地/站点", "col.address": "地址", "col.device": "设备",
        "col.rule": "规则", "col.value": "测量值 / 限值", "col.since": "开始时间", "col.for": "持续",
        "col.ack": "确认", "col.action": "操作",
        "ack": "确认", "acked_by": "已确认：{who}", "not_acked": "未确认", "ack_comment": "确认说明（如：已派人到场）",
        "ack_send": "提交确认", "cancel": "取消", "ack_ok": "已确认", "ack_failed": "确认失败：{why}",
        "data_as_of": "数据时间 {t}（{ago} 前）", "no_data": "尚未收到任何数据",
        "stale": "数据已过期：{ago} 未收到任何消息", "link_down": "与消息服务器断开：{why}",
        "service_down": "告警服务已停止：看板不再更新", "service_unknown": "告警服务状态未知（未收到其在线信号）",
        "console_down": "与控制台的连接中断，正在重连…", "no_alerts": "当前没有活动告警",
        "active_alerts": "活动告警 {n} 条", "role": "角色", "nav_board": "告警看板", "nav_map": "城市地图",
        "map_missing": "地图组件未安装（{files}）：请运行 scripts/bootstrap.sh", "map_title": "厦门市 · 站点与告警",
        "no_alert": "无活动告警", "role.viewer": "查看", "role.operator": "值班操作",
        "role.admin": "管理员", "lang": "English", "details": "详情",
        "state.firing": "告警中", "state.pending": "待定", "flapping": "抖动",
        "alert": "告警", "context": "检测依据", "notices": "通知记录", "commands": "操作记录", "readings": "窗口内读数",
        "back": "返回看板", "no_readings": "无读数（InfluxDB 不可达或窗口内无数据）", "peak": "峰值",
        "when": "时间", "sink": "通道", "status": "状态", "author": "操作人", "result": "结果", "transition": "变化",
        "device_charts": "设备曲线", "chart_link": "曲线", "device_title": "设备 {id}", "unknown_device": "未知设备：{id}",
        "range_h": "近 {h} 小时", "leq": "Leq（1 分钟能量平均）", "lmax": "Lmax", "l90": "L90",
        "limit": "现行限值", "prohibited": "禁止施工时段（无许可）", "exam": "考试期间", "night": "夜间",
        "newest_reading": "最新读数 {t}（{ago} 前）", "no_readings_range": "所选时段内无读数",
        "pressure": "压力", "set_pressure": "设定压力", "g_high": "高压告警 G-high", "g_highhigh": "高高压 G-highhigh",
        "g_low": "低压告警 G-low", "loading": "加载中…", "chart_error": "无法读取数据：{why}", "unit_db": "dB(A)",
        "unit_kpa": "kPa",
    },
    "en": {
        "title": "City operations · alert board", "login": "Log in", "logout": "Log out", "username": "User name",
        "password": "Password", "login_failed": "Wrong user name or password",
        "login_limited": "Too many failed logins: try again in {s} s",
        "sev.red": "Red", "sev.orange": "Orange", "sev.yellow": "Yellow", "sev.blue": "Blue",
        "col.severity": "Severity", "col.site": "Site", "col.address": "Address", "col.device": "Device",
        "col.rule": "Rule", "col.value": "Value / limit", "col.since": "Since", "col.for": "For",
        "col.ack": "Acknowledged", "col.action": "Action",
        "ack": "Ack", "acked_by": "Acked by {who}", "not_acked": "Not acked", "ack_comment": "Comment (e.g. crew sent)",
        "ack_send": "Acknowledge", "cancel": "Cancel", "ack_ok": "Acknowledged", "ack_failed": "Ack failed: {why}",
        "data_as_of": "Data as of {t} ({ago} ago)", "no_data": "No data heard yet",
        "stale": "STALE: nothing heard for {ago}", "link_down": "Broker link down: {why}",
        "service_down": "The alerting service is stopped: this board is not updated",
        "service_unknown": "Alerting service state unknown (no presence heard)",
        "console_down": "Connection to the console lost, reconnecting…", "no_alerts": "No active alerts",
        "active_alerts": "{n} active alerts", "role": "Role", "nav_board": "Alert board", "nav_map": "City map",
        "map_missing": "Map libraries not installed ({files}): run scripts/bootstrap.sh",
        "map_title": "Xiamen · sites and alerts", "no_alert": "no active alert",
        "role.viewer": "viewer", "role.operator": "operator",
        "role.admin": "admin", "lang": "中文", "details": "Details",
        "state.firing": "firing", "state.pending": "pending", "flapping": "flapping",
        "alert": "Alert", "context": "Detector context", "notices": "Notifications", "commands": "Commands",
        "readings": "Readings of the window", "back": "Back to the board",
        "no_readings": "No readings (InfluxDB unreachable or nothing in the window)", "peak": "Peak",
        "when": "When", "sink": "Sink", "status": "Status", "author": "By", "result": "Result",
        "transition": "Transition",
        "device_charts": "Device charts", "chart_link": "chart", "device_title": "Device {id}", "unknown_device": "Unknown device: {id}",
        "range_h": "Last {h} h", "leq": "Leq (1-min energy mean)", "lmax": "Lmax", "l90": "L90",
        "limit": "Limit in force", "prohibited": "Prohibited hours (no permit)", "exam": "Exam period",
        "night": "Night", "newest_reading": "Newest reading {t} ({ago} ago)",
        "no_readings_range": "No readings in the selected range", "pressure": "Pressure",
        "set_pressure": "Set pressure", "g_high": "G-high", "g_highhigh": "G-highhigh", "g_low": "G-low",
        "loading": "Loading…", "chart_error": "Cannot read the data: {why}", "unit_db": "dB(A)", "unit_kpa": "kPa",
    },
}


def words(lang: str) -> dict:
    """The strings of `lang` (unknown: zh-CN) with the rule names under `rules`."""
    lang = lang if lang in LANGUAGES else "zh-CN"
    return {**STRINGS[lang], "rules": RULES[lang], "lang_code": lang}
