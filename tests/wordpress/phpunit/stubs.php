<?php
/**
 * Minimal stand-ins for the form plugins' objects, shaped exactly as their documented hook
 * arguments (the plugins themselves cannot be installed here).
 */

/** Contact Form 7's WPCF7_Submission as passed to wpcf7_spam. */
class Activelead_Stub_CF7_Submission {
	public $spam_log = array();
	private $data;
	public function __construct( array $data ) {
		$this->data = $data;
	}
	public function get_posted_data() {
		return $this->data;
	}
	public function get_contact_form() {
		return new class() {
			public function id() {
				return 42;
			}
		};
	}
	public function add_spam_log( $args ) {
		$this->spam_log[] = $args;
	}
}

/** wpforms()->process->errors, which WPForms reads after wpforms_process. */
if ( ! function_exists( 'wpforms' ) ) {
	function wpforms() {
		static $instance = null;
		if ( null === $instance ) {
			$instance          = new stdClass();
			$instance->process = new stdClass();
			$instance->process->errors = array();
		}
		return $instance;
	}
}

/** Elementor Pro's Form_Record. */
class Activelead_Stub_Elementor_Record {
	private $fields;
	public function __construct( array $fields ) {
		$this->fields = $fields;
	}
	public function get( $key ) {
		return 'fields' === $key ? $this->fields : null;
	}
	public function get_form_settings( $key ) {
		return 'id' === $key ? 'contact1' : null;
	}
}

/** Elementor Pro's Ajax_Handler. */
class Activelead_Stub_Elementor_Handler {
	public $errors   = array();
	public $messages = array();
	public function add_error( $field, $message = '' ) {
		$this->errors[ $field ] = $message;
	}
	public function add_error_message( $message ) {
		$this->messages[] = $message;
	}
}

/** Gravity Forms' GFAPI::add_note. */
if ( ! class_exists( 'GFAPI' ) ) {
	class GFAPI {
		public static $notes = array();
		public static function add_note( $entry_id, $user_id, $user_name, $note ) {
			self::$notes[] = array( $entry_id, $user_name, $note );
		}
	}
}
