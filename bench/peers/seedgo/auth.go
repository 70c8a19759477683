package main

import (
	"errors"
	"time"

	// jwt v4 (module github.com/golang-jwt/jwt/v4): Debian's package puts
	// it at this GOPATH path, without the /v4.
	"github.com/golang-jwt/jwt"
)

// authenticator checks the tokens the car app issues: HS256 only, with the
// expected issuer and audience, within exp/nbf give or take a leeway.
type authenticator struct {
	secret   []byte
	issuer   string
	audience string
	leeway   time.Duration
	parser   *jwt.Parser
}

func newAuthenticator(secret []byte, issuer, audience string, leeway time.Duration) *authenticator {
	return &authenticator{
		secret:   secret,
		issuer:   issuer,
		audience: audience,
		leeway:   leeway,
		// Claims are checked below, with the leeway jwt/v4 has no option for.
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithoutClaimsValidation()),
	}
}

var (
	errBadToken = errors.New("invalid token")
	errExpired  = errors.New("token expired")
)

// userID returns the token's subject if the token is valid now.
func (a *authenticator) userID(token string) (string, error) {
	if token == "" {
		return "", errBadToken
	}
	claims := &jwt.RegisteredClaims{}
	_, err := a.parser.ParseWithClaims(token, claims, func(*jwt.Token) (interface{}, error) {
		return a.secret, nil
	})
	if err != nil {
		return "", errBadToken
	}
	now := time.Now()
	switch {
	case !claims.VerifyExpiresAt(now.Add(-a.leeway), true):
		return "", errExpired
	case !claims.VerifyNotBefore(now.Add(a.leeway), true),
		!claims.VerifyIssuer(a.issuer, true),
		!claims.VerifyAudience(a.audience, true),
		claims.Subject == "":
		return "", errBadToken
	}
	return claims.Subject, nil
}
