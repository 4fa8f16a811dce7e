package crypto_test

// Vector C of the protocol reference (§8): a self-generated
// add_external_contact POST with the official sample's token, key and corp id.
const (
	vcToken     = "QDG6eK"
	vcAESKey    = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	vcReceiveID = "wx5823bf96d3bd56c7"
	vcKeyHex    = "8d69989bbaabe67328014c194631ad0719b3dca035b64023df292447aab60760"
	vcTimestamp = "1700000000"
	vcNonce     = "1234567890"
	vcRandom    = "0123456789abcdef"
	vcSignature = "2db8a29ba0b7f204c9c8d90f4fabbcace6201709"
	vcEncrypt   = "sKqRbbiSUnDhFHOvPjtUMQt4o93Z7RIw5jBB62MqEINhKaM9eMS5BYRP3YqfaOp4WaT0GPBltRR0d6Brb8l/KpYiGIMpzeVwh+7K8G46kDK+dHgPEuZ/WJz1/DSInCiNv9YJuEZkqHZ8otPbIbb+X354iMCha+E0HGKTBV43XPdgzLDDEtp/tLniVIEChMkf4/Z5U+kwLTmeCzV+3KX1Vkh+nkOJkz4F8ya2xO48rXJb/8q+UYaEfjW6gkEdJPHqFgMpORb3G6ZE2h969yBUEWH9Jkfzv2RfhqRWKKp1VBmyqtcKYGH+hfnnkAH8YLmD0rUYWYneBOjj3ez+/AxJSXpoJtIZKI9uB49li0eMeeaMiHp5hU374kqZ4hmY2LY1fsABN8blebydEzcNqtuz/OP6uFDFTApAGlW2taIJHNDKPt2bhSq2DLcpSoAL13AgJt07jev2Ey9BTn8I/PyGYpJfUHmI3DosV1jHwI1JdERiN/t0BdwnMb/+0hxPYfCRvRIUEeoRsxa9wXxYYLFZvjI1RFcaLkQED48oEn+yobJDBlrLTwsXht18ZWekVYQoSfe+jCK02P5JhCX1fXl/QN09YFV/CLBTCCNQ17JRyYU16IJxyA4p88sdeuG8gVtJI0kMq+ohHigYa3+61xTFBLlWI65NYRtTq1rssCDAt9Wzgdpa5ude/EG9NL/SLTiG65h10MiE2HmC3oTfyM8FJA=="
	vcMsg       = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mAAAA]]></ExternalUserID><State><![CDATA[teststate]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode></xml>"
)

// The wechat-crypto Rust crate's documented vector (§8): decryption only.
const (
	rustAESKey     = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aQ"
	rustKeyHex     = "916c4f115d94103cb15a998f74a0b71787603c398ebdf297d471a71140d2d5a4"
	rustCiphertext = "9s4gMv99m88kKTh/H8IdkNiFGeG9pd7vNWl50fGRWXY="
)
