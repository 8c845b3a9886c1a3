<?php
/**
 * Plugin Name:       Activelead
 * Plugin URI:        https://github.com/activelead/activelead
 * Description:       Scores comments, registrations, logins and form-plugin submissions with an Activelead service and stops the fake ones.
 * Version:           0.1.0
 * Requires at least: 6.1
 * Requires PHP:      7.4
 * Author:            Activelead
 * License:           Apache-2.0
 * License URI:       https://www.apache.org/licenses/LICENSE-2.0
 * Text Domain:       activelead
 * Domain Path:       /languages
 * Network:           true
 *
 * @package Activelead
 */

// Loaded directly, not through WordPress: do nothing.
if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

define( 'ACTIVELEAD_VERSION', '0.1.0' );
define( 'ACTIVELEAD_PLUGIN_FILE', __FILE__ );
define( 'ACTIVELEAD_PLUGIN_DIR', plugin_dir_path( __FILE__ ) );

require_once ACTIVELEAD_PLUGIN_DIR . 'class-activelead-settings.php';
require_once ACTIVELEAD_PLUGIN_DIR . 'class-activelead-client.php';
require_once ACTIVELEAD_PLUGIN_DIR . 'class-activelead-integrations.php';
require_once ACTIVELEAD_PLUGIN_DIR . 'class-activelead-privacy.php';
require_once ACTIVELEAD_PLUGIN_DIR . 'class-activelead.php';

register_activation_hook( __FILE__, array( 'Activelead', 'activate' ) );
add_action( 'plugins_loaded', array( 'Activelead', 'init' ) );

if ( is_admin() ) {
	require_once ACTIVELEAD_PLUGIN_DIR . 'class-activelead-admin.php';
	add_action( 'plugins_loaded', array( 'Activelead_Admin', 'init' ) );
}
