package client

import (
	"maps"

	"github.com/trackapi/trackapi/gen"
)

// Events are the generated model, gen.Event, so that what partners build is exactly what the
// spec describes. The constructors below make the standard events of the Tracking API (its events
// reference) with their required properties as parameters, so that a forgotten one is a compile
// error rather than a schema warning in the server's answer. Optional properties are added with
// the event's Set method, and context (page, device) by assigning its fields. The client fills
// context.event_id and context.event_timestamp when they are left empty.

// Product is an item's product. ID, Name and Price (excluding tax, after discount) are required.
type Product struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Price     float64  `json:"price"`
	Currency  string   `json:"currency,omitempty"` // overrides the event's; all items must share it
	Category1 string   `json:"category_1,omitempty"`
	Category2 string   `json:"category_2,omitempty"`
	Category3 string   `json:"category_3,omitempty"`
	Brand     string   `json:"brand,omitempty"`
	Colors    []string `json:"colors,omitempty"`
	Size      string   `json:"size,omitempty"`
}

// Item is one line of a cart or an order. ID (the key for later updates such as refunds), Product
// and Quantity are required.
type Item struct {
	ID           string  `json:"id"`
	Product      Product `json:"product"`
	Quantity     int     `json:"quantity"`
	Variant      string  `json:"variant,omitempty"`
	ListPosition int     `json:"list_position,omitempty"`
	Discount     float64 `json:"discount,omitempty"`
	Affiliation  string  `json:"affiliation,omitempty"`
	Coupon       string  `json:"coupon,omitempty"`
	// Value is the unit price including tax, times the quantity.
	Value float64 `json:"value,omitempty"`
}

// Payment methods of add_payment_info and purchase.
const (
	PaymentByInvoice             = "by_invoice"
	PaymentBankTransferInAdvance = "by_bank_transfer_in_advance"
	PaymentCard                  = "card"
	PaymentCheckInAdvance        = "check_in_advance"
	PaymentCashOnDelivery        = "cod"
	PaymentCoupon                = "coupon"
	PaymentDirectDebit           = "direct_debit"
	PaymentOnlineSystem          = "online_payment_system"
	PaymentOther                 = "other"
)

// Order statuses of purchase. OrderPending is left out of the platform's default aggregates.
const (
	OrderCanceled           = "canceled"
	OrderDelivered          = "delivered"
	OrderInProgress         = "in_progress"
	OrderPartiallyDelivered = "partially_delivered"
	OrderPartiallyReturned  = "partially_returned"
	OrderPartiallyShipped   = "partially_shipped"
	OrderPendingShipment    = "pending_shipment"
	OrderReturned           = "returned"
	OrderShipped            = "shipped"
	OrderPending            = "pending"
)

// NewUser makes the user every standard event requires: the platform's anonymous id and the ids
// of the consent categories the user accepted (only those: destinations are filtered on them).
func NewUser(consistentAnonymousID string, consentCategories ...string) gen.User {
	u := gen.User{ConsistentAnonymousId: consistentAnonymousID}
	if consentCategories != nil {
		cats := make([]gen.ConsentCategory, len(consentCategories))
		for i, c := range consentCategories {
			_ = cats[i].FromConsentCategory0(c) // encoding a string cannot fail
		}
		u.ConsentCategories = &cats
	}
	return u
}

// Custom makes an event of any name with any properties at its root (custom events need only a
// name; standard properties are welcome in them). properties is copied; values must encode to
// JSON.
func Custom(name string, properties map[string]any, user gen.User) gen.Event {
	return gen.Event{EventName: name, User: user, AdditionalProperties: maps.Clone(properties)}
}

func newEvent(name string, user gen.User, props ...any) gen.Event {
	e := gen.Event{EventName: name, User: user}
	for i := 0; i+1 < len(props); i += 2 {
		e.Set(props[i].(string), props[i+1])
	}
	return e
}

// items never encodes as null: the server's schema wants an array.
func items(it []Item) []Item {
	if it == nil {
		return []Item{}
	}
	return it
}

// PageView is a page_view. pageType is one of home, landing, product_list, product,
// content_list, content, search, funnel, success, funnel_confirmation, account, cart, legal.
func PageView(pageType string, user gen.User) gen.Event {
	return newEvent("page_view", user, "page_type", pageType)
}

// Search is a search for searchTerm.
func Search(searchTerm string, user gen.User) gen.Event {
	e := newEvent("search", user)
	e.SearchTerm = &searchTerm
	return e
}

// ViewItem is a view_item: value (with tax) and currency (ISO 4217) of the items shown.
func ViewItem(value float64, currency string, it []Item, user gen.User) gen.Event {
	return newEvent("view_item", user, "value", value, "currency", currency, "items", items(it))
}

// AddToCart is an add_to_cart: value (with tax) and currency (ISO 4217) of the items added.
func AddToCart(value float64, currency string, it []Item, user gen.User) gen.Event {
	return newEvent("add_to_cart", user, "value", value, "currency", currency, "items", items(it))
}

// BeginCheckout is a begin_checkout. value includes shipping and tax, revenue excludes them
// (the same order of the two amounts in every constructor).
func BeginCheckout(value, revenue float64, currency string, it []Item, user gen.User) gen.Event {
	return newEvent("begin_checkout", user, "value", value, "revenue", revenue, "currency", currency, "items", items(it))
}

// Purchase is a purchase: order id, type (online, offline, call), value (with shipping and tax),
// revenue (without), currency, payment method (Payment*), status (Order*) and items.
func Purchase(id, typ string, value, revenue float64, currency, paymentMethod, status string, it []Item, user gen.User) gen.Event {
	return newEvent("purchase", user, "id", id, "type", typ, "value", value, "revenue", revenue,
		"currency", currency, "payment_method", paymentMethod, "status", status, "items", items(it))
}

// Refund is a refund of order id. Give the refunded items for a partial refund, nil for a full one.
func Refund(id, typ string, value, revenue float64, currency string, it []Item, user gen.User) gen.Event {
	e := newEvent("refund", user, "id", id, "type", typ, "value", value, "revenue", revenue, "currency", currency)
	if it != nil {
		e.Set("items", it)
	}
	return e
}

// Login is a login; method (say "password", "google") is optional: "" leaves it out.
func Login(method string, user gen.User) gen.Event {
	return withMethod(newEvent("login", user), method)
}

// SignUp is a sign_up; method is optional as for Login.
func SignUp(method string, user gen.User) gen.Event {
	return withMethod(newEvent("sign_up", user), method)
}

func withMethod(e gen.Event, method string) gen.Event {
	if method != "" {
		e.Set("method", method)
	}
	return e
}
