"""Writes ``toolcalls.jsonl``, edgec's tool-calling evaluation set (CC0-1.0, see README.md), from the tool pool and the
hand-written cases below: ``python examples/toolcalls/make_toolcalls.py`` (deterministic; tests check that the
committed file is what this script writes).

Each case is a conversation and the calls it must produce. Every argument value appears verbatim in the conversation
(a city, an amount, an ISO date, a unit from the tool's enum), so the expected calls are unambiguous; an optional
argument is expected only where the user states it. Each prompt offers the tools it needs plus seeded distractors
from the pool (2 to 5 tools in all, in a seeded order).
"""

from __future__ import annotations

import json
import os
import random
import zlib
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "toolcalls.jsonl")

DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "description": "Date as YYYY-MM-DD"}
TIME = {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$", "description": "24-hour time as HH:MM"}
UNITS = [
    "meters",
    "kilometers",
    "miles",
    "feet",
    "inches",
    "centimeters",
    "kilograms",
    "pounds",
    "grams",
    "ounces",
    "celsius",
    "fahrenheit",
    "liters",
    "gallons",
]
TEMP_UNIT = {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit (default celsius)"}
CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 currency code, e.g. USD"}
AIRPORT = {"type": "string", "pattern": "^[A-Z]{3}$", "description": "IATA airport code, e.g. JFK"}


def _tool(name: str, description: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


def _s(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


TOOLS = {
    t["function"]["name"]: t
    for t in [
        _tool(
            "get_weather", "Get the current weather for a city.", {"city": _s("City name"), "unit": TEMP_UNIT}, ["city"]
        ),
        _tool(
            "get_forecast",
            "Get the daily weather forecast for a city.",
            {
                "city": _s("City name"),
                "days": {"type": "integer", "minimum": 1, "maximum": 14, "description": "Number of days"},
                "unit": TEMP_UNIT,
            },
            ["city", "days"],
        ),
        _tool(
            "convert_units",
            "Convert a value between units of length, mass, temperature or volume.",
            {
                "value": {"type": "number", "description": "The value to convert"},
                "from_unit": {"type": "string", "enum": UNITS},
                "to_unit": {"type": "string", "enum": UNITS},
            },
            ["value", "from_unit", "to_unit"],
        ),
        _tool(
            "convert_currency",
            "Convert an amount of money from one currency to another at today's rate.",
            {
                "amount": {"type": "number", "exclusiveMinimum": 0},
                "from_currency": CURRENCY,
                "to_currency": CURRENCY,
            },
            ["amount", "from_currency", "to_currency"],
        ),
        _tool(
            "translate_text",
            "Translate a text into another language.",
            {
                "text": _s("The text to translate"),
                "target_language": _s("Target language name in English, e.g. German"),
                "source_language": _s("Source language name in English; detected when omitted"),
            },
            ["text", "target_language"],
        ),
        _tool(
            "web_search",
            "Search the web and return the top results.",
            {
                "query": _s("Search query"),
                "max_results": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Default 10"},
            },
            ["query"],
        ),
        _tool(
            "calculate",
            "Evaluate an arithmetic expression and return the result.",
            {"expression": _s("Arithmetic expression, e.g. (3 + 4) * 2")},
            ["expression"],
        ),
        _tool(
            "create_calendar_event",
            "Create an event in the user's calendar.",
            {
                "title": _s("Event title"),
                "date": DATE,
                "start_time": TIME,
                "duration_minutes": {"type": "integer", "minimum": 1, "description": "Default 60"},
                "location": _s("Where the event takes place"),
            },
            ["title", "date", "start_time"],
        ),
        _tool("list_calendar_events", "List the events in the user's calendar on a day.", {"date": DATE}, ["date"]),
        _tool(
            "send_email",
            "Send an email.",
            {
                "to": {"type": "string", "format": "email", "description": "Recipient address"},
                "subject": _s("Subject line"),
                "body": _s("Message body"),
                "cc": {"type": "array", "items": {"type": "string", "format": "email"}, "description": "Copy to"},
            },
            ["to", "subject", "body"],
        ),
        _tool(
            "search_emails",
            "Search the user's mailbox.",
            {
                "query": _s("Words to search for"),
                "unread_only": {"type": "boolean", "description": "Only unread messages (default false)"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            ["query"],
        ),
        _tool(
            "set_alarm",
            "Set an alarm on the user's phone.",
            {
                "time": TIME,
                "label": _s("Alarm label"),
                "repeat_daily": {"type": "boolean", "description": "Ring every day (default false)"},
            },
            ["time"],
        ),
        _tool(
            "set_timer",
            "Start a countdown timer.",
            {"minutes": {"type": "integer", "minimum": 1, "maximum": 1440}, "label": _s("Timer label")},
            ["minutes"],
        ),
        _tool("read_file", "Read a text file and return its content.", {"path": _s("File path")}, ["path"]),
        _tool(
            "write_file",
            "Write text to a file, replacing its content unless append is true.",
            {
                "path": _s("File path"),
                "content": _s("Text to write"),
                "append": {"type": "boolean", "description": "Append instead of replacing (default false)"},
            },
            ["path", "content"],
        ),
        _tool(
            "list_directory",
            "List the files in a directory.",
            {"path": _s("Directory path"), "show_hidden": {"type": "boolean", "description": "Include dotfiles"}},
            ["path"],
        ),
        _tool("delete_file", "Delete a file.", {"path": _s("File path")}, ["path"]),
        _tool(
            "set_thermostat",
            "Set the home thermostat.",
            {
                "temperature": {"type": "number", "minimum": 5, "maximum": 35, "description": "Target in celsius"},
                "mode": {"type": "string", "enum": ["heat", "cool", "auto", "off"]},
            },
            ["temperature"],
        ),
        _tool(
            "control_light",
            "Switch the lights of a room on or off, optionally dimmed.",
            {
                "room": _s("Room name, e.g. kitchen"),
                "state": {"type": "string", "enum": ["on", "off"]},
                "brightness": {"type": "integer", "minimum": 0, "maximum": 100, "description": "Percent"},
            },
            ["room", "state"],
        ),
        _tool(
            "set_door_lock",
            "Lock or unlock a door of the house.",
            {"door": _s("Door name, e.g. front door"), "locked": {"type": "boolean"}},
            ["door", "locked"],
        ),
        _tool(
            "play_music",
            "Play a song, an artist or a playlist.",
            {
                "query": _s("Song, artist or playlist name"),
                "shuffle": {"type": "boolean", "description": "Shuffle the tracks (default false)"},
            },
            ["query"],
        ),
        _tool(
            "get_stock_price",
            "Get the latest price of a stock.",
            {"symbol": {"type": "string", "pattern": "^[A-Z.]{1,6}$", "description": "Ticker symbol, e.g. AAPL"}},
            ["symbol"],
        ),
        _tool(
            "send_sms",
            "Send a text message to a phone number.",
            {"phone_number": _s("Phone number in international format"), "message": _s("Message text")},
            ["phone_number", "message"],
        ),
        _tool(
            "create_reminder",
            "Create a reminder.",
            {"text": _s("What to be reminded of"), "date": DATE, "time": TIME},
            ["text", "date"],
        ),
        _tool(
            "add_todo",
            "Add a task to the user's to-do list.",
            {
                "task": _s("The task"),
                "priority": {"type": "string", "enum": ["low", "medium", "high"]},
                "due_date": DATE,
            },
            ["task"],
        ),
        _tool(
            "get_directions",
            "Get directions between two places.",
            {
                "origin": _s("Starting point"),
                "destination": _s("Destination"),
                "mode": {"type": "string", "enum": ["driving", "walking", "bicycling", "transit"]},
            },
            ["origin", "destination"],
        ),
        _tool(
            "find_restaurants",
            "Find restaurants near a place.",
            {
                "location": _s("City or neighbourhood"),
                "cuisine": _s("Type of food, e.g. Thai"),
                "max_results": {"type": "integer", "minimum": 1, "maximum": 20},
                "open_now": {"type": "boolean"},
            },
            ["location"],
        ),
        _tool(
            "book_table",
            "Book a table at a restaurant.",
            {
                "restaurant": _s("Restaurant name"),
                "date": DATE,
                "time": TIME,
                "party_size": {"type": "integer", "minimum": 1, "maximum": 20},
            },
            ["restaurant", "date", "time", "party_size"],
        ),
        _tool(
            "search_flights",
            "Search flights between two airports on a date.",
            {
                "origin": AIRPORT,
                "destination": AIRPORT,
                "date": DATE,
                "passengers": {"type": "integer", "minimum": 1, "maximum": 9, "description": "Default 1"},
                "cabin": {"type": "string", "enum": ["economy", "premium_economy", "business", "first"]},
            },
            ["origin", "destination", "date"],
        ),
        _tool(
            "get_time",
            "Get the current local time in a time zone.",
            {"timezone": _s("IANA time zone name, e.g. Europe/Berlin")},
            ["timezone"],
        ),
        _tool(
            "get_news",
            "Get the latest news headlines on a topic.",
            {"topic": _s("News topic"), "count": {"type": "integer", "minimum": 1, "maximum": 20}},
            ["topic"],
        ),
        _tool(
            "calculate_tip",
            "Calculate the tip for a restaurant bill.",
            {
                "bill_amount": {"type": "number", "minimum": 0},
                "tip_percent": {"type": "number", "minimum": 0, "maximum": 100},
            },
            ["bill_amount", "tip_percent"],
        ),
        _tool(
            "get_definition", "Look up the dictionary definition of an English word.", {"word": _s("Word")}, ["word"]
        ),
        _tool(
            "create_note",
            "Save a note.",
            {
                "title": _s("Note title"),
                "content": _s("Note text"),
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            ["title", "content"],
        ),
        _tool(
            "calculate_loan_payment",
            "Monthly payment of a fixed-rate loan.",
            {
                "principal": {"type": "number", "exclusiveMinimum": 0},
                "annual_rate_percent": {"type": "number", "minimum": 0},
                "years": {"type": "integer", "minimum": 1, "maximum": 50},
            },
            ["principal", "annual_rate_percent", "years"],
        ),
        _tool(
            "generate_password",
            "Generate a random password.",
            {
                "length": {"type": "integer", "minimum": 8, "maximum": 128},
                "include_symbols": {"type": "boolean", "description": "Default true"},
            },
            ["length"],
        ),
        _tool(
            "track_package",
            "Track a parcel.",
            {
                "tracking_number": _s("Tracking number"),
                "carrier": {"type": "string", "enum": ["ups", "fedex", "dhl", "usps"]},
            },
            ["tracking_number"],
        ),
        _tool(
            "set_volume",
            "Set the speaker volume.",
            {"level": {"type": "integer", "minimum": 0, "maximum": 100, "description": "Percent"}},
            ["level"],
        ),
        _tool(
            "shorten_url",
            "Shorten a long URL.",
            {"url": {"type": "string", "format": "uri", "description": "The URL to shorten"}},
            ["url"],
        ),
    ]
}


def C(name: str, **arguments: Any) -> dict[str, Any]:  # noqa: N802 - reads like the call it stands for
    return {"name": name, "arguments": arguments}


U = "user"
A = "assistant"
S = "system"

# (id, conversation: a user message or [(role, content), ...], expected calls)
CASES: list[tuple[str, str | list[tuple[str, str]], list[dict[str, Any]]]] = [
    # --- weather and forecast
    ("weather-01", "What's the weather like in Paris right now?", [C("get_weather", city="Paris")]),
    (
        "weather-02",
        "How hot is it in Phoenix today? Give it to me in fahrenheit.",
        [C("get_weather", city="Phoenix", unit="fahrenheit")],
    ),
    ("weather-03", "Is it raining in Dublin at the moment?", [C("get_weather", city="Dublin")]),
    (
        "weather-04",
        "Current temperature in Reykjavik in celsius, please.",
        [C("get_weather", city="Reykjavik", unit="celsius")],
    ),
    ("weather-05", "Check the weather in Nairobi.", [C("get_weather", city="Nairobi")]),
    ("forecast-01", "Give me the 5-day forecast for Berlin.", [C("get_forecast", city="Berlin", days=5)]),
    (
        "forecast-02",
        "What will the weather be in Chicago over the next 3 days, in fahrenheit?",
        [C("get_forecast", city="Chicago", days=3, unit="fahrenheit")],
    ),
    ("forecast-03", "I need a 7-day weather forecast for Sydney.", [C("get_forecast", city="Sydney", days=7)]),
    ("forecast-04", "Forecast for Lima for the next 10 days please.", [C("get_forecast", city="Lima", days=10)]),
    # --- unit conversion
    (
        "units-01",
        "Convert 42 kilometers to miles.",
        [C("convert_units", value=42, from_unit="kilometers", to_unit="miles")],
    ),
    (
        "units-02",
        "How many pounds is 70 kilograms?",
        [C("convert_units", value=70, from_unit="kilograms", to_unit="pounds")],
    ),
    (
        "units-03",
        "Convert 98.6 fahrenheit to celsius.",
        [C("convert_units", value=98.6, from_unit="fahrenheit", to_unit="celsius")],
    ),
    (
        "units-04",
        "What is 5.5 feet in centimeters?",
        [C("convert_units", value=5.5, from_unit="feet", to_unit="centimeters")],
    ),
    (
        "units-05",
        "Please convert 3 gallons into liters.",
        [C("convert_units", value=3, from_unit="gallons", to_unit="liters")],
    ),
    (
        "units-06",
        "How many grams are in 12 ounces?",
        [C("convert_units", value=12, from_unit="ounces", to_unit="grams")],
    ),
    (
        "units-07",
        "Convert 250 centimeters to inches.",
        [C("convert_units", value=250, from_unit="centimeters", to_unit="inches")],
    ),
    # --- currency
    (
        "currency-01",
        "Convert 250 USD to EUR.",
        [C("convert_currency", amount=250, from_currency="USD", to_currency="EUR")],
    ),
    (
        "currency-02",
        "How much is 19.99 GBP in JPY?",
        [C("convert_currency", amount=19.99, from_currency="GBP", to_currency="JPY")],
    ),
    (
        "currency-03",
        "I have 1200 CHF. What is that in USD?",
        [C("convert_currency", amount=1200, from_currency="CHF", to_currency="USD")],
    ),
    (
        "currency-04",
        "Change 75.5 EUR into CAD.",
        [C("convert_currency", amount=75.5, from_currency="EUR", to_currency="CAD")],
    ),
    (
        "currency-05",
        "What do 10000 INR come to in AUD?",
        [C("convert_currency", amount=10000, from_currency="INR", to_currency="AUD")],
    ),
    (
        "currency-06",
        "Convert 3.75 NZD to USD.",
        [C("convert_currency", amount=3.75, from_currency="NZD", to_currency="USD")],
    ),
    # --- translation
    (
        "translate-01",
        "Translate 'good morning' into Spanish.",
        [C("translate_text", text="good morning", target_language="Spanish")],
    ),
    (
        "translate-02",
        "How do you say 'where is the train station' in German?",
        [C("translate_text", text="where is the train station", target_language="German")],
    ),
    (
        "translate-03",
        "Translate 'merci beaucoup' from French to English.",
        [C("translate_text", text="merci beaucoup", target_language="English", source_language="French")],
    ),
    (
        "translate-04",
        "Please translate 'I would like a coffee' into Italian.",
        [C("translate_text", text="I would like a coffee", target_language="Italian")],
    ),
    (
        "translate-05",
        "Translate 'happy birthday' to Japanese.",
        [C("translate_text", text="happy birthday", target_language="Japanese")],
    ),
    # --- web search
    (
        "search-01",
        "Search the web for 'best hiking trails in Colorado'.",
        [C("web_search", query="best hiking trails in Colorado")],
    ),
    (
        "search-02",
        "Find 5 results for 'python asyncio tutorial'.",
        [C("web_search", query="python asyncio tutorial", max_results=5)],
    ),
    (
        "search-03",
        "Look up 'history of the Eiffel Tower' online.",
        [C("web_search", query="history of the Eiffel Tower")],
    ),
    (
        "search-05",
        "Search for 'vegan lasagna recipe' and return 8 results.",
        [C("web_search", query="vegan lasagna recipe", max_results=8)],
    ),
    (
        "search-04",
        "Do a web search for 'electric car tax credit 2025' and show me 3 results.",
        [C("web_search", query="electric car tax credit 2025", max_results=3)],
    ),
    # --- math
    ("math-01", "Calculate 1234 * 5678.", [C("calculate", expression="1234 * 5678")]),
    ("math-02", "What is (15 + 27) / 6?", [C("calculate", expression="(15 + 27) / 6")]),
    ("math-03", "Evaluate 2 ** 16 - 1.", [C("calculate", expression="2 ** 16 - 1")]),
    ("math-04", "Compute 3.5 * (8 - 2.25).", [C("calculate", expression="3.5 * (8 - 2.25)")]),
    # --- calendar
    (
        "calendar-01",
        "Add 'Dentist appointment' to my calendar on 2025-03-14 at 09:30.",
        [C("create_calendar_event", title="Dentist appointment", date="2025-03-14", start_time="09:30")],
    ),
    (
        "calendar-02",
        "Schedule 'Team standup' on 2025-06-02 at 10:00 for 15 minutes.",
        [C("create_calendar_event", title="Team standup", date="2025-06-02", start_time="10:00", duration_minutes=15)],
    ),
    (
        "calendar-03",
        "Create an event called 'Lunch with Maria' on 2025-04-18 at 12:30 at Cafe Central.",
        [
            C(
                "create_calendar_event",
                title="Lunch with Maria",
                date="2025-04-18",
                start_time="12:30",
                location="Cafe Central",
            )
        ],
    ),
    (
        "calendar-04",
        "Put 'Quarterly review' in my calendar for 2025-09-30 at 14:00, lasting 90 minutes, in Room 4B.",
        [
            C(
                "create_calendar_event",
                title="Quarterly review",
                date="2025-09-30",
                start_time="14:00",
                duration_minutes=90,
                location="Room 4B",
            )
        ],
    ),
    ("calendar-05", "What's on my calendar on 2025-05-05?", [C("list_calendar_events", date="2025-05-05")]),
    ("calendar-06", "Show me my events for 2025-12-24.", [C("list_calendar_events", date="2025-12-24")]),
    # --- email
    (
        "email-01",
        "Send an email to alice@example.com with the subject 'Meeting notes' and the body 'Notes attached, see you Monday.'",
        [C("send_email", to="alice@example.com", subject="Meeting notes", body="Notes attached, see you Monday.")],
    ),
    (
        "email-02",
        "Email bob@example.org, subject 'Invoice 4471', body 'Please find the invoice enclosed.', and cc carol@example.org.",
        [
            C(
                "send_email",
                to="bob@example.org",
                subject="Invoice 4471",
                body="Please find the invoice enclosed.",
                cc=["carol@example.org"],
            )
        ],
    ),
    (
        "email-03",
        "Write to support@example.net with subject 'Login issue' saying 'I cannot log in since yesterday.'",
        [C("send_email", to="support@example.net", subject="Login issue", body="I cannot log in since yesterday.")],
    ),
    ("email-04", "Search my emails for 'flight confirmation'.", [C("search_emails", query="flight confirmation")]),
    (
        "email-05",
        "Find unread emails about 'project apollo'.",
        [C("search_emails", query="project apollo", unread_only=True)],
    ),
    (
        "email-06",
        "Show me the 20 most recent emails mentioning 'invoice'.",
        [C("search_emails", query="invoice", limit=20)],
    ),
    # --- alarms and timers
    ("alarm-01", "Set an alarm for 06:45.", [C("set_alarm", time="06:45")]),
    ("alarm-02", "Wake me up at 07:15 every day.", [C("set_alarm", time="07:15", repeat_daily=True)]),
    (
        "alarm-03",
        "Set an alarm at 22:00 labeled 'Take medicine'.",
        [C("set_alarm", time="22:00", label="Take medicine")],
    ),
    ("alarm-04", "Alarm at 05:30 please.", [C("set_alarm", time="05:30")]),
    (
        "alarm-05",
        "Set a daily alarm at 06:00 labeled 'Run'.",
        [C("set_alarm", time="06:00", label="Run", repeat_daily=True)],
    ),
    ("timer-01", "Set a timer for 15 minutes.", [C("set_timer", minutes=15)]),
    ("timer-02", "Start a 45 minute timer called 'Bread'.", [C("set_timer", minutes=45, label="Bread")]),
    ("timer-03", "Set a 3 minute timer named 'eggs'.", [C("set_timer", minutes=3, label="eggs")]),
    ("timer-04", "Count down 90 minutes.", [C("set_timer", minutes=90)]),
    # --- files
    ("file-01", "Show me the contents of /etc/hosts.", [C("read_file", path="/etc/hosts")]),
    ("file-02", "Read the file notes/todo.txt.", [C("read_file", path="notes/todo.txt")]),
    (
        "file-03",
        "Write 'hello world' to /tmp/greeting.txt.",
        [C("write_file", path="/tmp/greeting.txt", content="hello world")],
    ),
    (
        "file-04",
        "Append the line 'backup done' to logs/backup.log.",
        [C("write_file", path="logs/backup.log", content="backup done", append=True)],
    ),
    ("file-05", "List the files in /home/sam/projects.", [C("list_directory", path="/home/sam/projects")]),
    (
        "file-06",
        "List everything in ~/Downloads, hidden files included.",
        [C("list_directory", path="~/Downloads", show_hidden=True)],
    ),
    ("file-07", "Delete the file /tmp/old_report.pdf.", [C("delete_file", path="/tmp/old_report.pdf")]),
    ("file-08", "Remove build/output.bin.", [C("delete_file", path="build/output.bin")]),
    ("file-09", "Save the text 'v2.1.0' to VERSION.txt.", [C("write_file", path="VERSION.txt", content="v2.1.0")]),
    # --- smart home
    ("home-01", "Set the thermostat to 21 degrees.", [C("set_thermostat", temperature=21)]),
    ("home-02", "Set the thermostat to 19.5 in heat mode.", [C("set_thermostat", temperature=19.5, mode="heat")]),
    ("home-03", "Cool the house down to 24 degrees.", [C("set_thermostat", temperature=24, mode="cool")]),
    ("home-04", "Turn on the lights in the kitchen.", [C("control_light", room="kitchen", state="on")]),
    ("home-05", "Switch off the bedroom lights.", [C("control_light", room="bedroom", state="off")]),
    (
        "home-06",
        "Turn the living room lights on at 40 percent brightness.",
        [C("control_light", room="living room", state="on", brightness=40)],
    ),
    (
        "home-07",
        "Turn on the office lights at 10 percent brightness.",
        [C("control_light", room="office", state="on", brightness=10)],
    ),
    ("home-08", "Lock the front door.", [C("set_door_lock", door="front door", locked=True)]),
    ("home-09", "Unlock the garage door.", [C("set_door_lock", door="garage door", locked=False)]),
    ("home-10", "Set the volume to 30.", [C("set_volume", level=30)]),
    ("home-11", "Mute the speaker by setting the volume to 0.", [C("set_volume", level=0)]),
    # --- music
    ("music-01", "Play 'Bohemian Rhapsody'.", [C("play_music", query="Bohemian Rhapsody")]),
    ("music-02", "Play my 'Road Trip' playlist on shuffle.", [C("play_music", query="Road Trip", shuffle=True)]),
    ("music-03", "Put on some Miles Davis.", [C("play_music", query="Miles Davis")]),
    ("music-04", "Play songs by Daft Punk in shuffle mode.", [C("play_music", query="Daft Punk", shuffle=True)]),
    # --- finance
    ("stock-01", "What's the current price of AAPL?", [C("get_stock_price", symbol="AAPL")]),
    ("stock-02", "How is NVDA trading right now?", [C("get_stock_price", symbol="NVDA")]),
    ("stock-03", "Get me the stock price for BRK.B.", [C("get_stock_price", symbol="BRK.B")]),
    ("tip-01", "What's a 15 percent tip on a bill of 86.40?", [C("calculate_tip", bill_amount=86.4, tip_percent=15)]),
    ("tip-02", "Calculate an 18% tip for a 120 dollar bill.", [C("calculate_tip", bill_amount=120, tip_percent=18)]),
    (
        "tip-03",
        "Our bill is 47.25; how much is a 20 percent tip?",
        [C("calculate_tip", bill_amount=47.25, tip_percent=20)],
    ),
    (
        "loan-01",
        "What's the monthly payment on a 250000 loan at 6.5 percent for 30 years?",
        [C("calculate_loan_payment", principal=250000, annual_rate_percent=6.5, years=30)],
    ),
    (
        "loan-02",
        "Monthly payment for borrowing 18000 over 5 years at 4.9% interest?",
        [C("calculate_loan_payment", principal=18000, annual_rate_percent=4.9, years=5)],
    ),
    (
        "loan-03",
        "I want to borrow 7500 at 12 percent a year for 3 years. What would I pay per month?",
        [C("calculate_loan_payment", principal=7500, annual_rate_percent=12, years=3)],
    ),
    # --- messaging
    (
        "sms-01",
        "Text +14155550123 saying 'Running 10 minutes late'.",
        [C("send_sms", phone_number="+14155550123", message="Running 10 minutes late")],
    ),
    (
        "sms-02",
        "Send an SMS to +447700900123: 'Your table is ready.'",
        [C("send_sms", phone_number="+447700900123", message="Your table is ready.")],
    ),
    (
        "sms-03",
        "Message +33612345678 with 'See you at the station'.",
        [C("send_sms", phone_number="+33612345678", message="See you at the station")],
    ),
    # --- reminders and to-dos
    (
        "reminder-01",
        "Remind me to 'call mom' on 2025-05-11.",
        [C("create_reminder", text="call mom", date="2025-05-11")],
    ),
    (
        "reminder-02",
        "Set a reminder 'pay rent' on 2025-07-01 at 08:00.",
        [C("create_reminder", text="pay rent", date="2025-07-01", time="08:00")],
    ),
    (
        "reminder-03",
        "Remind me about the 'car inspection' on 2025-10-20 at 16:30.",
        [C("create_reminder", text="car inspection", date="2025-10-20", time="16:30")],
    ),
    ("todo-01", "Add 'buy milk' to my to-do list.", [C("add_todo", task="buy milk")]),
    (
        "todo-02",
        "Add a high priority task: 'submit tax return'.",
        [C("add_todo", task="submit tax return", priority="high")],
    ),
    (
        "todo-03",
        "Put 'renew passport' on my to-do list with low priority, due 2025-08-15.",
        [C("add_todo", task="renew passport", priority="low", due_date="2025-08-15")],
    ),
    (
        "todo-04",
        "New task: 'water the plants', due 2025-04-02.",
        [C("add_todo", task="water the plants", due_date="2025-04-02")],
    ),
    # --- travel and places
    (
        "directions-01",
        "How do I get from Union Square to Golden Gate Park?",
        [C("get_directions", origin="Union Square", destination="Golden Gate Park")],
    ),
    (
        "directions-02",
        "Walking directions from Louvre Museum to Notre-Dame Cathedral.",
        [C("get_directions", origin="Louvre Museum", destination="Notre-Dame Cathedral", mode="walking")],
    ),
    (
        "directions-03",
        "Give me transit directions from Shibuya Station to Tokyo Tower.",
        [C("get_directions", origin="Shibuya Station", destination="Tokyo Tower", mode="transit")],
    ),
    (
        "directions-04",
        "Cycling route from Amsterdam Centraal to Vondelpark, please.",
        [C("get_directions", origin="Amsterdam Centraal", destination="Vondelpark", mode="bicycling")],
    ),
    ("restaurant-01", "Find restaurants in Brooklyn.", [C("find_restaurants", location="Brooklyn")]),
    ("restaurant-02", "Find Thai restaurants in Seattle.", [C("find_restaurants", location="Seattle", cuisine="Thai")]),
    (
        "restaurant-03",
        "Show me 3 sushi places in Vancouver that are open now.",
        [C("find_restaurants", location="Vancouver", cuisine="sushi", max_results=3, open_now=True)],
    ),
    (
        "restaurant-04",
        "Any vegetarian restaurants in Camden? Give me 5.",
        [C("find_restaurants", location="Camden", cuisine="vegetarian", max_results=5)],
    ),
    (
        "booking-01",
        "Book a table for 4 at Luigi's on 2025-02-14 at 19:30.",
        [C("book_table", restaurant="Luigi's", date="2025-02-14", time="19:30", party_size=4)],
    ),
    (
        "booking-02",
        "Reserve a table at The Green Fork for 2 people on 2025-06-21 at 20:00.",
        [C("book_table", restaurant="The Green Fork", date="2025-06-21", time="20:00", party_size=2)],
    ),
    (
        "booking-03",
        "Get us a table at Casa Lola on 2025-11-08 at 13:00 for 6.",
        [C("book_table", restaurant="Casa Lola", date="2025-11-08", time="13:00", party_size=6)],
    ),
    (
        "flight-01",
        "Find flights from JFK to LAX on 2025-03-20.",
        [C("search_flights", origin="JFK", destination="LAX", date="2025-03-20")],
    ),
    (
        "flight-02",
        "Search flights from LHR to CDG on 2025-05-02 for 2 passengers.",
        [C("search_flights", origin="LHR", destination="CDG", date="2025-05-02", passengers=2)],
    ),
    (
        "flight-03",
        "Business class flights from SFO to NRT on 2025-09-12, please.",
        [C("search_flights", origin="SFO", destination="NRT", date="2025-09-12", cabin="business")],
    ),
    (
        "flight-04",
        "Look for economy flights for 3 from ORD to MIA on 2025-12-19.",
        [C("search_flights", origin="ORD", destination="MIA", date="2025-12-19", passengers=3, cabin="economy")],
    ),
    ("time-01", "What time is it in Asia/Tokyo?", [C("get_time", timezone="Asia/Tokyo")]),
    ("time-02", "Current time in the Europe/London time zone?", [C("get_time", timezone="Europe/London")]),
    ("time-03", "Tell me the local time for America/New_York.", [C("get_time", timezone="America/New_York")]),
    # --- news, dictionary, notes, utilities
    ("news-01", "What's the latest news about renewable energy?", [C("get_news", topic="renewable energy")]),
    ("news-02", "Give me 5 headlines about the stock market.", [C("get_news", topic="stock market", count=5)]),
    ("news-03", "Show me 10 news stories on space exploration.", [C("get_news", topic="space exploration", count=10)]),
    ("define-01", "Define the word 'serendipity'.", [C("get_definition", word="serendipity")]),
    ("define-02", "What does 'ephemeral' mean?", [C("get_definition", word="ephemeral")]),
    ("define-03", "Look up the meaning of 'ubiquitous'.", [C("get_definition", word="ubiquitous")]),
    (
        "note-01",
        "Save a note titled 'Gift ideas' with the text 'scarf, board game, tea set'.",
        [C("create_note", title="Gift ideas", content="scarf, board game, tea set")],
    ),
    (
        "note-02",
        "Create a note called 'Wifi' that says 'password is on the fridge', tagged 'home'.",
        [C("create_note", title="Wifi", content="password is on the fridge", tags=["home"])],
    ),
    (
        "note-03",
        "Make a note 'Recipe' with 'two eggs, flour, milk' and tags 'cooking' and 'breakfast'.",
        [C("create_note", title="Recipe", content="two eggs, flour, milk", tags=["cooking", "breakfast"])],
    ),
    ("password-01", "Generate a 16 character password.", [C("generate_password", length=16)]),
    (
        "password-02",
        "Make me a 24-character password without symbols.",
        [C("generate_password", length=24, include_symbols=False)],
    ),
    (
        "password-03",
        "I need a 12 character password with symbols.",
        [C("generate_password", length=12, include_symbols=True)],
    ),
    (
        "package-01",
        "Where is my package 1Z999AA10123456784?",
        [C("track_package", tracking_number="1Z999AA10123456784")],
    ),
    (
        "package-02",
        "Track the DHL shipment 4839201736.",
        [C("track_package", tracking_number="4839201736", carrier="dhl")],
    ),
    (
        "package-03",
        "Check the status of FedEx parcel 7712 3456 7890.",
        [C("track_package", tracking_number="7712 3456 7890", carrier="fedex")],
    ),
    (
        "url-01",
        "Shorten https://example.com/articles/2025/quantization-explained.",
        [C("shorten_url", url="https://example.com/articles/2025/quantization-explained")],
    ),
    (
        "url-02",
        "Give me a short link for https://docs.example.org/guide/install?lang=en.",
        [C("shorten_url", url="https://docs.example.org/guide/install?lang=en")],
    ),
    # --- two parallel calls
    (
        "parallel-01",
        "What's the weather in Oslo and in Madrid?",
        [C("get_weather", city="Oslo"), C("get_weather", city="Madrid")],
    ),
    (
        "parallel-02",
        "Turn off the kitchen lights and lock the back door.",
        [C("control_light", room="kitchen", state="off"), C("set_door_lock", door="back door", locked=True)],
    ),
    (
        "parallel-03",
        "Convert 100 USD to EUR and 100 USD to GBP.",
        [
            C("convert_currency", amount=100, from_currency="USD", to_currency="EUR"),
            C("convert_currency", amount=100, from_currency="USD", to_currency="GBP"),
        ],
    ),
    (
        "parallel-04",
        "Set a timer for 20 minutes and play 'Lo-fi Beats'.",
        [C("set_timer", minutes=20), C("play_music", query="Lo-fi Beats")],
    ),
    (
        "parallel-05",
        "What time is it in Europe/Paris and in Australia/Sydney?",
        [C("get_time", timezone="Europe/Paris"), C("get_time", timezone="Australia/Sydney")],
    ),
    (
        "parallel-06",
        "Get the prices of MSFT and GOOGL.",
        [C("get_stock_price", symbol="MSFT"), C("get_stock_price", symbol="GOOGL")],
    ),
    (
        "parallel-07",
        "Translate 'thank you' into French and into Korean.",
        [
            C("translate_text", text="thank you", target_language="French"),
            C("translate_text", text="thank you", target_language="Korean"),
        ],
    ),
    (
        "parallel-08",
        "Set the thermostat to 22 and turn on the hallway lights.",
        [C("set_thermostat", temperature=22), C("control_light", room="hallway", state="on")],
    ),
    (
        "parallel-09",
        "Add 'call the plumber' to my to-do list and set an alarm for 08:00.",
        [C("add_todo", task="call the plumber"), C("set_alarm", time="08:00")],
    ),
    (
        "parallel-10",
        "Read config/app.yaml and list the files in config.",
        [C("read_file", path="config/app.yaml"), C("list_directory", path="config")],
    ),
    (
        "parallel-11",
        "Weather in Toronto in celsius, and the 3-day forecast for Montreal.",
        [C("get_weather", city="Toronto", unit="celsius"), C("get_forecast", city="Montreal", days=3)],
    ),
    (
        "parallel-12",
        "Find Italian restaurants in Boston and get news on 'Red Sox'.",
        [C("find_restaurants", location="Boston", cuisine="Italian"), C("get_news", topic="Red Sox")],
    ),
    (
        "parallel-13",
        "Convert 10 miles to kilometers and 10 pounds to kilograms.",
        [
            C("convert_units", value=10, from_unit="miles", to_unit="kilometers"),
            C("convert_units", value=10, from_unit="pounds", to_unit="kilograms"),
        ],
    ),
    (
        "parallel-14",
        "Text +15551234567 'On my way' and email dana@example.com with subject 'ETA' and body 'Arriving at 6.'",
        [
            C("send_sms", phone_number="+15551234567", message="On my way"),
            C("send_email", to="dana@example.com", subject="ETA", body="Arriving at 6."),
        ],
    ),
    (
        "parallel-15",
        "Calculate 144 / 12 and look up the definition of 'dozen'.",
        [C("calculate", expression="144 / 12"), C("get_definition", word="dozen")],
    ),
    (
        "parallel-16",
        "Delete tmp/a.log and tmp/b.log.",
        [C("delete_file", path="tmp/a.log"), C("delete_file", path="tmp/b.log")],
    ),
    (
        "parallel-17",
        "Search flights from BOS to SEA on 2025-08-01 and book a table at Pike Grill on 2025-08-01 at 19:00 for 2.",
        [
            C("search_flights", origin="BOS", destination="SEA", date="2025-08-01"),
            C("book_table", restaurant="Pike Grill", date="2025-08-01", time="19:00", party_size=2),
        ],
    ),
    (
        "parallel-18",
        "Set the volume to 55 and shuffle the 'Workout' playlist.",
        [C("set_volume", level=55), C("play_music", query="Workout", shuffle=True)],
    ),
    (
        "parallel-19",
        "Track UPS package 1Z12345E0205271688 and remind me to 'check the mailbox' on 2025-03-03.",
        [
            C("track_package", tracking_number="1Z12345E0205271688", carrier="ups"),
            C("create_reminder", text="check the mailbox", date="2025-03-03"),
        ],
    ),
    (
        "parallel-20",
        "What's on my calendar on 2025-04-01, and what's the weather in Denver?",
        [C("list_calendar_events", date="2025-04-01"), C("get_weather", city="Denver")],
    ),
    (
        "parallel-21",
        "Generate a 20 character password and shorten https://example.com/signup.",
        [C("generate_password", length=20), C("shorten_url", url="https://example.com/signup")],
    ),
    # --- conversations: earlier turns and system messages carry what the call needs
    (
        "dialog-01",
        [
            (U, "I'm flying to Lisbon tomorrow."),
            (A, "Nice! Anything I can help you with for the trip?"),
            (U, "Yes, what's the weather there right now?"),
        ],
        [C("get_weather", city="Lisbon")],
    ),
    (
        "dialog-02",
        [
            (U, "My colleague's address is jo@example.com."),
            (A, "Got it. What would you like to do?"),
            (U, "Email her with the subject 'Slides' and the body 'Uploaded to the shared drive.'"),
        ],
        [C("send_email", to="jo@example.com", subject="Slides", body="Uploaded to the shared drive.")],
    ),
    (
        "dialog-03",
        [
            (U, "I'm baking cookies."),
            (A, "Sounds delicious! How can I help?"),
            (U, "Start a 12 minute timer labeled 'cookies'."),
        ],
        [C("set_timer", minutes=12, label="cookies")],
    ),
    (
        "dialog-04",
        [
            (S, "You are a smart-home assistant. Use the tools to act on the user's requests."),
            (U, "It's too cold in here, heat the house to 23 degrees."),
        ],
        [C("set_thermostat", temperature=23, mode="heat")],
    ),
    (
        "dialog-05",
        [
            (S, "You are a travel assistant."),
            (U, "I need flights from CPH to ARN on 2025-06-15 for 1 passenger in economy."),
        ],
        [C("search_flights", origin="CPH", destination="ARN", date="2025-06-15", passengers=1, cabin="economy")],
    ),
    (
        "dialog-06",
        [(U, "How much is 500 SEK in EUR?"), (A, "Let me check that for you."), (U, "Actually make it 800 SEK.")],
        [C("convert_currency", amount=800, from_currency="SEK", to_currency="EUR")],
    ),
    (
        "dialog-07",
        [(U, "I keep my notes in /data/notes."), (A, "Okay, noted."), (U, "List the files in that directory.")],
        [C("list_directory", path="/data/notes")],
    ),
    (
        "dialog-08",
        [(S, "You are a finance assistant. Always use tools for numbers."), (U, "What is 0.07 * 35000?")],
        [C("calculate", expression="0.07 * 35000")],
    ),
    (
        "dialog-09",
        [
            (U, "Tomorrow is 2025-01-09."),
            (A, "Thanks, I'll keep that in mind."),
            (U, "Add 'Gym session' to my calendar tomorrow at 18:00 for 60 minutes."),
        ],
        [C("create_calendar_event", title="Gym session", date="2025-01-09", start_time="18:00", duration_minutes=60)],
    ),
    (
        "dialog-10",
        [
            (S, "You are a helpful assistant with access to tools."),
            (U, "Play 'Clair de Lune' and set the volume to 25."),
        ],
        [C("play_music", query="Clair de Lune"), C("set_volume", level=25)],
    ),
]


def _seed(case_id: str) -> int:
    return zlib.crc32(case_id.encode())


def example(case_id: str, conversation, expected: list[dict[str, Any]]) -> dict[str, Any]:
    """One JSONL record: the conversation, the needed tools plus seeded distractors (2-5 in all), the calls."""
    rng = random.Random(_seed(case_id))
    needed = list(dict.fromkeys(c["name"] for c in expected))
    total = max(len(needed) + 1, rng.randint(2, 5))
    others = [n for n in TOOLS if n not in needed]
    names = needed + rng.sample(others, total - len(needed))
    rng.shuffle(names)
    if isinstance(conversation, str):
        conversation = [(U, conversation)]
    return {
        "id": case_id,
        "messages": [{"role": r, "content": c} for r, c in conversation],
        "tools": [TOOLS[n] for n in names],
        "expected": expected,
    }


def records() -> list[dict[str, Any]]:
    """Every example of the set, in order."""
    return [example(*c) for c in CASES]


def write(path: str = OUT) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records():
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write()
    print(f"{OUT}: {len(CASES)} examples, {len(TOOLS)} tools")
