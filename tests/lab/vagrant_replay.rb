# The Vagrantfile as Vagrant itself reads it, without a hypervisor
# (tests/lab/vagrant.py drives this; Debian's vagrant package provides the
# library):
#
#   ruby vagrant_replay.rb machines
#       prints {machine: {ip, provisioners: [...]}} as JSON
#   ruby vagrant_replay.rb provision <machine> [<provisioner name>...]
#       runs the machine's provisioners (all, or those named) in order:
#       shell ones as Vagrant's shell provisioner runs an inline script, salt
#       ones through Vagrant's own Salt provisioner class. Their guest
#       commands go out on stdout, one JSON request a line
#       ({"op": "upload"|"sudo"|"test", ...}), and the answers come back on
#       stdin ({"ok": bool, "output": "..."}): the caller runs them in a
#       test host, or only records them.
require "json"
require "shellwords"
require "tempfile"
require "vagrant"

# Vagrant's guest communicator, over the request/answer lines.
class Remote
  def initialize(log)
    @log = log
  end

  def ask(request)
    $stdout.puts(JSON.generate(request))
    $stdout.flush
    answer = JSON.parse($stdin.gets || raise("no answer to #{request}"))
    @log.info(answer["output"]) unless answer["output"].to_s.empty?
    answer
  end

  def upload(from, to)
    ask({ "op" => "upload", "src" => from.to_s, "dst" => to.to_s })
  end

  def test(command, _opts = nil)
    ask({ "op" => "test", "cmd" => command })["ok"]
  end

  def sudo(command, _opts = nil)
    answer = ask({ "op" => "sudo", "cmd" => command })
    raise "guest command failed: #{command}\n#{answer['output']}" unless answer["ok"]

    0
  end
  alias execute sudo
end

# What Vagrant prints, to stderr: stdout carries the requests.
class Log
  def info(message, *_rest)
    $stderr.puts(message.to_s)
  end
  alias detail info
  alias warn info
  alias output info
end

Machine = Struct.new(:name, :config, :env, :communicate)
Env = Struct.new(:root_path, :ui)

root = File.expand_path(ENV.fetch("SALT_DJANGO_ROOT", Dir.pwd))
env = Vagrant::Environment.new(cwd: root, ui_class: Vagrant::UI::Silent)
config_of = ->(name) { env.vagrantfile.machine_config(name.to_sym, nil, nil)[:config] }

def salt_settings(salt)
  %w[bootstrap_script install_type version install_master no_minion run_highstate orchestrations
     minion_json_config master_json_config].to_h { |key| [key, salt.public_send(key)] }
    .merge("seed_master" => (salt.seed_master || {}).keys, "minion_key" => !salt.minion_key.nil?)
end

case ARGV.shift
when "machines"
  out = env.machine_names.to_h do |name|
    vm = config_of.call(name).vm
    ip = vm.networks.find { |type, _| type == :private_network }&.last&.fetch(:ip)
    provisioners = vm.provisioners.map do |p|
      { "name" => p.name.to_s, "type" => p.type.to_s }
        .merge(p.type == :salt ? salt_settings(p.config) : { "args" => Array(p.config.args) })
    end
    [name.to_s, { "ip" => ip, "hostname" => vm.hostname, "provisioners" => provisioners }]
  end
  puts(JSON.generate(out))
when "provision"
  name = ARGV.shift
  config = config_of.call(name)
  log = Log.new
  machine = Machine.new(name.to_sym, config, Env.new(Pathname.new(root), log), Remote.new(log))
  config.vm.provisioners.each do |p|
    next unless ARGV.empty? || ARGV.include?(p.name.to_s)

    log.info("==> #{name}: provisioner #{p.name} (#{p.type})")
    case p.type
    when :salt
      VagrantPlugins::Salt::Provisioner.new(machine, p.config).provision
    when :shell
      script = Tempfile.new("vagrant-shell")
      script.write(p.config.inline)
      script.close
      path = p.config.upload_path || "/tmp/vagrant-shell" # Vagrant's default for a Linux guest
      machine.communicate.upload(script.path, path)
      args = Array(p.config.args).map { |a| Shellwords.escape(a) }.join(" ")
      machine.communicate.sudo("chmod +x '#{path}' && #{path} #{args}")
    else
      raise "no replay for #{p.type} provisioners"
    end
  end
else
  abort("usage: ruby vagrant_replay.rb machines | provision <machine> [<provisioner>...]")
end
