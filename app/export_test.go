package app

import "go.uber.org/fx"

// LoadWithTransports is LoadConfig with the sections of the transports the
// framework brings, as the fx graph gives them, before extra sections.
func LoadWithTransports(svc Service, env Env, extra ...ConfigSection) (Config, error) {
	var sections []ConfigSection
	app := fx.New(fx.NopLogger, memoryModule, mqttModule, rabbitMQModule, aliyunModule,
		fx.Invoke(fx.Annotate(func(s []ConfigSection) { sections = s }, fx.ParamTags(`group:"config_sections"`))))
	if err := app.Err(); err != nil {
		return Config{}, err
	}
	return LoadConfig(svc, env, append(sections, extra...)...)
}
