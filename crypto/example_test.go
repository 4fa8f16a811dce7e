package crypto_test

import (
	"fmt"

	"github.com/pendinglink/pendinglink/crypto"
)

// ExampleNew verifies and decrypts Vector C, a change_external_contact POST.
func ExampleNew() {
	// Set-up: the callback Token and EncodingAESKey from the WeCom console.
	c, err := crypto.New("QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C")
	if err != nil {
		fmt.Println(err)
		return
	}

	// msg_signature, timestamp and nonce come from the query string; the
	// ciphertext from the body's <Encrypt> (or from echostr on GET).
	const (
		msgSignature = "2db8a29ba0b7f204c9c8d90f4fabbcace6201709"
		encrypted    = "sKqRbbiSUnDhFHOvPjtUMQt4o93Z7RIw5jBB62MqEINhKaM9eMS5BYRP3YqfaOp4WaT0GPBltRR0d6Brb8l/KpYiGIMpzeVwh+7K8G46kDK+dHgPEuZ/WJz1/DSInCiNv9YJuEZkqHZ8otPbIbb+X354iMCha+E0HGKTBV43XPdgzLDDEtp/tLniVIEChMkf4/Z5U+kwLTmeCzV+3KX1Vkh+nkOJkz4F8ya2xO48rXJb/8q+UYaEfjW6gkEdJPHqFgMpORb3G6ZE2h969yBUEWH9Jkfzv2RfhqRWKKp1VBmyqtcKYGH+hfnnkAH8YLmD0rUYWYneBOjj3ez+/AxJSXpoJtIZKI9uB49li0eMeeaMiHp5hU374kqZ4hmY2LY1fsABN8blebydEzcNqtuz/OP6uFDFTApAGlW2taIJHNDKPt2bhSq2DLcpSoAL13AgJt07jev2Ey9BTn8I/PyGYpJfUHmI3DosV1jHwI1JdERiN/t0BdwnMb/+0hxPYfCRvRIUEeoRsxa9wXxYYLFZvjI1RFcaLkQED48oEn+yobJDBlrLTwsXht18ZWekVYQoSfe+jCK02P5JhCX1fXl/QN09YFV/CLBTCCNQ17JRyYU16IJxyA4p88sdeuG8gVtJI0kMq+ohHigYa3+61xTFBLlWI65NYRtTq1rssCDAt9Wzgdpa5ude/EG9NL/SLTiG65h10MiE2HmC3oTfyM8FJA=="
	)
	if err := c.VerifySignature(msgSignature, "1700000000", "1234567890", encrypted); err != nil {
		fmt.Println(err)
		return
	}
	msg, receiveID, err := c.Decrypt(encrypted)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("msg length:", len(msg))
	fmt.Println("receive id:", string(receiveID))
	// Output:
	// msg length: 486
	// receive id: wx5823bf96d3bd56c7
}

// ExampleCrypt_Seal builds the POST WeCom would send and reads it back.
func ExampleCrypt_Seal() {
	c, err := crypto.New("QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C")
	if err != nil {
		fmt.Println(err)
		return
	}
	// A nil random source means crypto/rand.
	body, sig, err := c.Seal([]byte("<xml>hi</xml>"), "wwtestcorp", "wwtestcorp", "1000002", "1700000000", "42", nil)
	if err != nil {
		fmt.Println(err)
		return
	}

	env, err := crypto.ParseEnvelope(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := c.VerifySignature(sig, "1700000000", "42", env.Encrypt); err != nil {
		fmt.Println(err)
		return
	}
	msg, receiveID, err := c.Decrypt(env.Encrypt)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s %s %s\n", env.AgentID, msg, receiveID)
	// Output:
	// 1000002 <xml>hi</xml> wwtestcorp
}
