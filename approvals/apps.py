from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"

    def ready(self):
        from django.contrib.auth.signals import user_logged_out

        from anvia_project.socket_sessions import close_session_sockets, connect_recheck_signals

        # Reviewer and chat sockets alike close with the session they were opened with, and are
        # checked again at once when their user's rights change.
        user_logged_out.connect(close_session_sockets, dispatch_uid="anvia.close_session_sockets")
        connect_recheck_signals()
