from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from anvia_project import pages
from anvia_project.health import healthz

# The nav sidebar takes ~300 px of a 1280 px screen, which the approvals list (seven columns
# beside its filters) needs for the reason and "Decided by"; the breadcrumbs and home page remain.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("", pages.home, name="home"),
    path("admin/", admin.site.urls),
    path("accounts/login/", pages.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("review/", include("approvals.urls")),
    path("api/", include("approvals.api_urls")),
    path("chat/", include("agents.urls")),
    path("api/", include("agents.api_urls")),
    path("healthz", healthz, name="healthz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
