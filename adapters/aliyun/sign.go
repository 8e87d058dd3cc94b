package aliyun

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"
)

// credentials are what one dial authenticates with.
type credentials struct {
	// UserName is Aliyun's user name; in STS mode it holds the security
	// token, so log LogName instead.
	UserName string
	Password string
	// LogName is the user name without secrets: safe to log.
	LogName string
}

// sign builds the SASL PLAIN user name and password for one connection
// attempt, as Aliyun specifies: a fresh epoch-millisecond timestamp in both
// the user name and the signed string.
func sign(c Config, clientID string, now time.Time) credentials {
	ts := strconv.FormatInt(now.UnixMilli(), 10)
	mode, toSign, token := "aksign", "authId="+c.AccessKeyID+"&timestamp="+ts, ""
	if c.SecurityToken != "" {
		mode = "ststoken"
		token = ",securityToken=" + c.SecurityToken.Reveal()
		toSign = "authId=" + c.AccessKeyID + "&securityToken=" + c.SecurityToken.Reveal() + "&timestamp=" + ts
	}
	user := func(token string) string {
		return fmt.Sprintf("%s|authMode=%s%s,signMethod=%s,consumerGroupId=%s,authId=%s,iotInstanceId=%s,timestamp=%s|",
			clientID, mode, token, c.SignMethod, c.ConsumerGroupID, c.AccessKeyID, c.IotInstanceID, ts)
	}
	logToken := ""
	if token != "" {
		logToken = ",securityToken=[redacted]"
	}
	return credentials{
		UserName: user(token),
		Password: signature(c.SignMethod, c.AccessKeySecret.Reveal(), toSign),
		LogName:  user(logToken),
	}
}

// signature is base64(HMAC(secret, s)) with the hash of method.
func signature(method, secret, s string) string {
	var h func() hash.Hash
	switch strings.ToLower(method) {
	case SignHMACSHA256:
		h = sha256.New
	case SignHMACMD5:
		h = md5.New
	default:
		h = sha1.New
	}
	mac := hmac.New(h, []byte(secret))
	mac.Write([]byte(s))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
