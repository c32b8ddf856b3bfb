package client

import (
	"maps"

	"github.com/trackapi/trackapi/gen"
)

// Events are the generated model, gen.Event, so that what partners build is exactly what the
// spec describes. The constructors below make the standard events of the Tracking API (its events
// reference; openapi.yaml's StandardEvents lists them with their required properties) with their
// required properties as parameters, so that a forgotten one is a compile error rather than a
// missing_required_property warning in the server's answer. A test holds the constructors to the
// spec's list. Optional properties are added with
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

// AddPaymentInfo is an add_payment_info: the payment method chosen (Payment*). Coupon, revenue,
// currency and items are optional.
func AddPaymentInfo(paymentMethod string, user gen.User) gen.Event {
	return newEvent("add_payment_info", user, "payment_method", paymentMethod)
}

// AddShippingInfo is an add_shipping_info: value (with tax) and currency (ISO 4217) of the items
// to ship. Coupon and shipping_tier are optional.
func AddShippingInfo(value float64, currency string, it []Item, user gen.User) gen.Event {
	return newEvent("add_shipping_info", user, "value", value, "currency", currency, "items", items(it))
}

// ViewItemList is a view_item_list: the items of a list shown (item_list_name is optional).
func ViewItemList(it []Item, user gen.User) gen.Event {
	return newEvent("view_item_list", user, "items", items(it))
}

// SelectItem is a select_item: the one item selected from a list (item_list_name is optional).
func SelectItem(item Item, user gen.User) gen.Event {
	return newEvent("select_item", user, "items", []Item{item})
}

// AddToWishlist is an add_to_wishlist of the items; value and currency are optional.
func AddToWishlist(it []Item, user gen.User) gen.Event {
	return newEvent("add_to_wishlist", user, "items", items(it))
}

// RemoveFromCart is a remove_from_cart of the items; value and currency are optional.
func RemoveFromCart(it []Item, user gen.User) gen.Event {
	return newEvent("remove_from_cart", user, "items", items(it))
}

// ViewCart is a view_cart: the items in the cart; value and currency are optional.
func ViewCart(it []Item, user gen.User) gen.Event {
	return newEvent("view_cart", user, "items", items(it))
}

// SelectContent is a select_content; content_type and item_id are optional (Set).
func SelectContent(user gen.User) gen.Event {
	return newEvent("select_content", user)
}

// GenerateLead is a generate_lead; value, currency (both wanted for reporting) and id are
// optional (Set).
func GenerateLead(user gen.User) gen.Event {
	return newEvent("generate_lead", user)
}

// SelectPromotion is a select_promotion; items, promotion_id, promotion_name, creative_name,
// creative_slot and location_id are optional (Set).
func SelectPromotion(user gen.User) gen.Event {
	return newEvent("select_promotion", user)
}

// ViewPromotion is a view_promotion, with the optional properties of SelectPromotion.
func ViewPromotion(user gen.User) gen.Event {
	return newEvent("view_promotion", user)
}

// AdView is an ad_view: the ad's medium and source. ad_cost_id, ad_format, campaign and keyword
// are optional (Set).
func AdView(medium, source string, user gen.User) gen.Event {
	return newEvent("ad_view", user, "medium", medium, "source", source)
}

// AdClick is an ad_click: the ad's medium and source, with the optional properties of AdView.
func AdClick(medium, source string, user gen.User) gen.Event {
	return newEvent("ad_click", user, "medium", medium, "source", source)
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
