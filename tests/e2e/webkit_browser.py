"""A small automation browser on WebKitGTK, for the WebKit E2E (tests/e2e/test_webkit*.py).

WebKitWebDriver starts this program (with Debian's /usr/bin/python3 and its python3-gi, not the
venv) as its "browser". MiniBrowser cannot serve: under automation it runs an ephemeral session,
and WebKit prints no console message for those. Here the session is persistent (a throw-away data
dir), so every console message reaches the web process's stderr, copied to the --console file.

Profiles: `desktop`, and `ipad` (iOS-like media rules: audio and media playback need a tap, audio
is interrupted while the page is hidden). Both: mock capture devices granted without a prompt,
every permission request allowed, downloads saved in --downloads; console messages in --console.

The page may ask this browser to hide its window for a while (a real page visibility change):
`window.webkit.messageHandlers.omniTest.postMessage({hide_ms: 3000})`.
"""

from __future__ import annotations

import argparse
import os
import tty

import gi

gi.require_version("Gtk", "3.0")
gi.require_version("WebKit2", "4.1")
from gi.repository import GLib, Gtk, WebKit2  # noqa: E402

IPAD_FEATURES = {
    "RequiresUserGestureForAudioPlayback": True,
    "RequiresUserGestureForMediaPlayback": True,
    "InterruptAudioOnPageVisibilityChange": True,
}
COMMON_FEATURES = {"MockCaptureDevicesPrompt": False, "GetUserMediaRequiresFocus": False, "MockCaptureDevices": True}


def make_settings(profile: str) -> WebKit2.Settings:
    s = WebKit2.Settings()
    s.set_enable_media_stream(True)
    s.set_enable_mock_capture_devices(True)
    s.set_enable_webaudio(True)
    s.set_enable_write_console_messages_to_stdout(True)
    s.set_media_playback_requires_user_gesture(profile == "ipad")
    features = WebKit2.Settings.get_all_features()
    wanted = {**COMMON_FEATURES, **(IPAD_FEATURES if profile == "ipad" else {})}
    for i in range(features.get_length()):
        f = features.get(i)
        if f.get_identifier() in wanted:
            s.set_feature_enabled(f, wanted.pop(f.get_identifier()))
    if wanted:
        raise SystemExit(f"this WebKitGTK lacks the features {sorted(wanted)}")
    return s


class Browser:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        data = os.path.join(args.data, "data")
        manager = WebKit2.WebsiteDataManager(
            base_data_directory=data, base_cache_directory=os.path.join(args.data, "cache")
        )
        self.ctx = WebKit2.WebContext(website_data_manager=manager)
        self.ctx.set_automation_allowed(args.automation)
        self.ctx.connect("automation-started", self.automation_started)
        self.ctx.connect("download-started", self.download_started)
        self.settings = make_settings(args.profile)
        self.windows: list[Gtk.Window] = []

    def automation_started(self, _ctx, session: WebKit2.AutomationSession) -> None:
        info = WebKit2.ApplicationInfo()
        info.set_name("MiniBrowser")  # the browserName Selenium asks for
        info.set_version(WebKit2.get_major_version(), WebKit2.get_minor_version(), WebKit2.get_micro_version())
        session.set_application_info(info)
        session.connect("create-web-view", self.create_view)

    def create_view(self, *_args) -> WebKit2.WebView:
        ucm = WebKit2.UserContentManager()
        ucm.register_script_message_handler("omniTest")
        view = WebKit2.WebView(
            web_context=self.ctx,
            settings=self.settings,
            user_content_manager=ucm,
            is_controlled_by_automation=self.args.automation,
        )
        win = Gtk.Window()
        win.set_default_size(1024, 768)
        win.add(view)
        ucm.connect("script-message-received::omniTest", lambda _m, res: self.test_message(win, res))
        view.connect("permission-request", lambda _v, req: req.allow() or True)
        view.connect("close", lambda _v: win.destroy())
        win.show_all()
        self.windows.append(win)
        return view

    def test_message(self, win: Gtk.Window, result) -> None:
        msg = result.get_js_value()
        hide_ms = msg.object_get_property("hide_ms").to_int32() if msg.object_has_property("hide_ms") else 0
        if hide_ms > 0:
            win.hide()
            GLib.timeout_add(hide_ms, lambda: win.show_all() and False)

    def download_started(self, _ctx, download: WebKit2.Download) -> None:
        def destination(d: WebKit2.Download, name: str) -> bool:
            d.set_destination("file://" + os.path.join(self.args.downloads, os.path.basename(name)))
            return True

        download.set_allow_overwrite(True)
        download.connect("decide-destination", destination)


def console_to(path: str) -> None:
    """WebKit writes console messages ("CONSOLE LOG ...", "CONSOLE JS ERROR ...") to the web
    process's stderr, which it inherits from here. Make that a terminal, so C stdio writes each line
    at once (to a file it could sit in a buffer, lost when the process is killed), and copy what
    comes out into `path` as it comes (GTK and GStreamer warnings too: the test picks the lines)."""
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    master, slave = os.openpty()
    tty.setraw(slave)  # no \r\n translation, no echo
    os.dup2(slave, 2)

    def copy(fd: int, _cond) -> bool:
        os.write(out, os.read(fd, 65536))
        return True

    GLib.io_add_watch(master, GLib.PRIORITY_HIGH, GLib.IOCondition.IN, copy)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--automation", action="store_true")
    ap.add_argument("--profile", choices=("desktop", "ipad"), default="desktop")
    ap.add_argument("--data", required=True, help="a fresh directory for the website data")
    ap.add_argument("--console", required=True, help="file that receives the page's console messages")
    ap.add_argument("--downloads", required=True)
    args, _unknown = ap.parse_known_args()
    console_to(args.console)
    Gtk.init(None)
    Browser(args)
    Gtk.main()


if __name__ == "__main__":
    main()
