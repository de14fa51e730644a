from django.contrib import admin

from shop.models import Order, Refund


class RefundInline(admin.TabularInline):
    model = Refund
    extra = 0
    can_delete = False
    readonly_fields = ["amount", "idempotency_key", "created_at"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["number", "customer", "description", "total", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["number", "customer__username", "description"]
    list_select_related = ["customer"]
    inlines = [RefundInline]


@admin.register(Refund)
class RefundAdmin(admin.ModelAdmin):
    list_display = ["order", "amount", "idempotency_key", "created_at"]
    search_fields = ["order__number", "idempotency_key"]
    list_select_related = ["order"]
    readonly_fields = ["order", "amount", "idempotency_key", "created_at"]

    def has_add_permission(self, request):
        return False
